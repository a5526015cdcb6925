"""Shared signal math (the bottom layer: torch, torchaudio and numpy only, no voxinv import).

* :func:`as_batch` — a loss target ``[N]`` (shared by every item) or ``[B, N]`` (one per item) as a batch;
* :class:`MultiScaleLogMel` / :func:`log_mel_l1` — the one log-mel distance of voxinv, ``log(mel + 1e-5)``
  (not a clamp): the ``mel`` loss term, the ``mel`` metric and the proxy's MR log-mel are all this;
* :func:`stft_magnitude` — auraloss's clamped STFT magnitude (the ``stft`` loss term);
* :func:`spectrogram_db` — the dB spectrogram of the figures (``20·log10(|STFT| + 1e-6)``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MEL_FFTS = (512, 1024, 2048)  # the metric's scales, mel bands and hop: the mel loss's settings in conf/loss/_base_.yaml
MEL_BINS = 80
MEL_HOP_RATIO = 0.25


def as_batch(x: torch.Tensor) -> torch.Tensor:
    """A loss target as a batch: one waveform ``[N]`` → ``[1, N]`` (shared by all items); ``[B, N]`` as is."""
    return x[None] if x.dim() == 1 else x


class MultiScaleLogMel(nn.Module):
    """Mean over scales of mean |log(mel(y) + eps) − log(mel(x) + eps)|: ``y [B, N]``, ``x [N]`` (one
    target) or ``[B, N]`` (one per item) → ``[B]``.

    Magnitude (power 1) mel spectrograms, hop ``n_fft · hop_ratio``, centred frames.
    """

    def __init__(self, sr: int, fft_sizes: Sequence[int], n_mels: int, hop_ratio: float, eps: float = 1e-5):
        super().__init__()
        import torchaudio

        self.mels = nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sr, n_fft=n, hop_length=max(1, int(n * hop_ratio)), n_mels=n_mels, power=1.0
            )
            for n in fft_sizes
        )
        self.eps = eps

    def forward(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:  # [B, N], [N] or [B, N] -> [B]
        out = 0.0
        for mel in self.mels:  # one transform per scale for all restarts; the target without a graph
            with torch.no_grad():
                mx = torch.log(mel(as_batch(x).to(y.dtype)) + self.eps)  # [1 or B, n_mels, frames]
            out = out + (torch.log(mel(y) + self.eps) - mx).abs().mean((-1, -2))
        return out / len(self.mels)


@functools.lru_cache(maxsize=8)
def _log_mel(sr: int, n_ffts: tuple[int, ...], n_mels: int) -> MultiScaleLogMel:
    return MultiScaleLogMel(sr, n_ffts, n_mels, MEL_HOP_RATIO)


def log_mel_l1(
    ref: torch.Tensor | np.ndarray,
    est: torch.Tensor | np.ndarray,
    sr: int,
    n_ffts: Sequence[int] = MEL_FFTS,
    n_mels: int = MEL_BINS,
) -> float:
    """:class:`MultiScaleLogMel` of mono ``est`` against ``ref`` (80 mels, n_fft 512/1024/2048, hop n_fft/4),
    in float32 from their float64 values (what the metric has always computed)."""

    def f32(a) -> torch.Tensor:
        t = (a.detach().cpu() if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))).double()
        if t.dim() == 0 or t.numel() == 0 or t.numel() != t.shape[-1] or not torch.isfinite(t).all():
            raise ValueError(f"log_mel_l1 takes mono, non-empty, finite waveforms; got shape {list(t.shape)}")
        return t.reshape(-1).float()

    with torch.no_grad():
        return float(_log_mel(sr, tuple(n_ffts), n_mels)(f32(est)[None], f32(ref))[0])


def stft_magnitude(
    z: torch.Tensor, n_fft: int, hop: int, win_length: int, window: torch.Tensor, eps: float
) -> torch.Tensor:
    """``[B, N]`` → ``[B, F, frames]``: ``sqrt(clamp(|STFT|², eps))``, auraloss's magnitude."""
    s = torch.stft(z, n_fft, hop, win_length, window, return_complex=True)
    return torch.sqrt(torch.clamp(s.real**2 + s.imag**2, min=eps))


def spectrogram_db(wav, n_fft: int, hop: int) -> torch.Tensor:
    """Mono ``wav`` (tensor or array) → ``20·log10(|STFT| + 1e-6)`` ``[freq, frames]`` (Hann window, CPU fp32)."""
    w = torch.as_tensor(wav).detach().float().cpu().reshape(-1)
    s = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return 20 * torch.log10(s + 1e-6)
