"""Optimise long targets on windows of frames, so memory is flat in clip length.

The codec decoder is causal with a receptive field under 25 frames (``VoxtralCodec.decode_windowed``
relies on the same fact). A training step therefore decodes only ``frames`` frames plus ``context``
frames of left context and scores the window's audio against the same span of the target; the
context frames' audio is decoded (so the window's first frames hear their true past) but not scored.
Windows visit the clip round-robin by step (deterministic, so a resumed run replays them); the last
window is aligned to the clip's end so every frame is scored.
"""

from __future__ import annotations

import torch


def window_at(step: int, n_frames: int, frames: int | None) -> tuple[int, int] | None:
    """Frames ``[start, end)`` scored at ``step``; ``None`` (the whole clip) when it fits one window."""
    if not frames or n_frames <= frames:
        return None
    starts = list(range(0, n_frames - frames + 1, frames))
    if starts[-1] + frames < n_frames:
        starts.append(n_frames - frames)
    s = starts[step % len(starts)]
    return s, s + frames


def window_of(
    step: int, latent: torch.Tensor, target: torch.Tensor, frames: int | None, context: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """What a step decodes and scores: (latent ``[B, 292, T']`` incl. left context, target ``[L]``, the
    number of leading context samples to drop from the decode). The whole clip when it fits one window."""
    w = window_at(step, latent.shape[-1], frames)
    if w is None:
        return latent, target, 0
    s, e = w
    a = max(0, s - context)
    spf = target.numel() // latent.shape[-1]  # samples per frame (the target is whole frames)
    return latent[..., a:e], target[s * spf : e * spf], (s - a) * spf


@torch.no_grad()
def decode_latent_windowed(codec, latent: torch.Tensor, chunk: int = 250, context: int = 25) -> torch.Tensor:
    """No-grad decode of latent ``[B, 292, T]`` → ``[B, 1, N]`` in ``chunk``-frame windows with ``context``
    frames of left context (as ``decode_windowed`` does for codes): a plain decode when it fits one window."""
    return codec.decode_latent_windowed(latent, chunk, context)
