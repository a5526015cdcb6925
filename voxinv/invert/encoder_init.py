"""``init=encoder``: one encoder forward pass gives the start codes, refinement does the rest.

The encoder is the model's own (a checkpoint with ``input_proj.*`` / ``encoder_blocks.*`` tensors,
as the proxy codec has) or a learned one (``init.path=<run dir>/encoder.safetensors`` from
``python -m voxinv.train_encoder``). Codes are exactly ``VoxtralCodec.encode``: nearest semantic
entry, tanh + 21-level FSQ.
"""

from __future__ import annotations

import os
import time

import torch

from voxinv.voxtral.codec import VoxtralCodec, load_codec


def encoder_codec(
    ckpt, path: str | os.PathLike | None, *, dtype: torch.dtype = torch.float32, device="cpu"
) -> VoxtralCodec:
    """The codec with an encoder: ``path``'s tensors, or the checkpoint's own when ``path`` is None."""
    from voxinv.voxtral.checkpoint import CheckpointError

    if path is None:
        codec = load_codec(ckpt, dtype=dtype, device=device)
        if not codec.has_encoder:
            raise CheckpointError(
                f"init=encoder: {ckpt.path} has no codec encoder (the release ships none); pass "
                "init.path=<run dir>/encoder.safetensors from `python -m voxinv.train_encoder`"
            )
        return codec
    return load_codec(ckpt, dtype=dtype, device=device, encoder_path=path)


@torch.no_grad()
def encoder_codes(codec: VoxtralCodec, wav: torch.Tensor) -> torch.Tensor:
    """Waveform ``[N]`` (whole 80 ms frames) → raw codes ``[T, 37]``, T = N / 1920."""
    spf = codec.samples_per_frame
    if wav.dim() != 1 or wav.numel() % spf:
        raise ValueError(
            f"encoder_codes wants a mono waveform [N] of whole {spf}-sample frames, got {tuple(wav.shape)}"
        )
    dev = next(codec.parameters()).device
    return codec.encode(wav.to(dev, codec.dtype)[None, None])[0].T.cpu()  # [T, 37]


def encoder_init(ckpt, path, wav: torch.Tensor, device="cpu") -> tuple[torch.Tensor, dict]:
    """``init=encoder``: start codes ``[T, 37]`` for the target ``wav [N]`` and init statistics."""
    t0 = time.time()
    codes = encoder_codes(encoder_codec(ckpt, path, device=device), wav)
    return codes, {
        "encoder": str(path) if path is not None else f"{ckpt.path} (own encoder)",
        "encode_seconds": round(time.time() - t0, 3),
        "distinct_semantic": int(codes[:, 0].unique().numel()),
    }
