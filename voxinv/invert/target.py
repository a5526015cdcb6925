"""What an inversion fits: a 24 kHz mono waveform cut into whole 80 ms frames, maybe with known codes.

* ``file``: any soundfile-readable recording → mono 24 kHz, optional silence trim, peak-normalised
  to the level of real preset decodes (≈ 0.08), zero-padded at the end to a whole frame (the pad is
  recorded, never a silent truncation).
* ``preset``: a preset voice of the model, decomposed into codes and decoded — in-gamut, codes known.
* ``synthetic``: random codes through the decoder — codes known (oracle experiments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxinv.audio import AudioError, check_not_silent, normalize_peak, read_audio, trim_silence
from voxinv.voxtral.codec import VoxtralCodec


@dataclass
class Target:
    wav: torch.Tensor  # [N] float32, N = T · samples_per_frame
    n_frames: int
    name: str
    codes: torch.Tensor | None = None  # raw [T, 37] when known
    info: dict = field(default_factory=dict)


def _frames_for(wav: torch.Tensor, spf: int, name: str) -> tuple[torch.Tensor, int, int]:
    if wav.numel() < spf:
        raise AudioError(
            f"{name} is {1000 * wav.numel() / 24000:.0f} ms long; at least one 80 ms frame ({spf} samples) is needed"
        )
    n_frames = -(-wav.numel() // spf)  # ceil: the tail is padded, never dropped
    pad = n_frames * spf - wav.numel()
    return torch.nn.functional.pad(wav, (0, pad)), n_frames, pad


def from_file(
    path: str | Path,
    codec: VoxtralCodec,
    *,
    trim: bool = True,
    trim_db: float = -40.0,
    peak: float | None = 0.08,
    max_seconds: float | None = None,
) -> Target:
    """Load a recording as a target (see module docstring)."""
    sr, spf = codec.sampling_rate, codec.samples_per_frame
    wav = read_audio(path, sr)
    check_not_silent(wav, f"audio {path}")
    n_in = wav.numel()
    if trim:
        wav = trim_silence(wav, sr, trim_db)
    if max_seconds is not None and wav.numel() > max_seconds * sr:
        raise AudioError(
            f"audio {path} is {wav.numel() / sr:.1f} s after trimming, above target.max_seconds={max_seconds}; "
            "cut it or raise target.max_seconds"
        )
    if peak is not None:
        wav = normalize_peak(wav, peak)
    wav, n_frames, pad = _frames_for(wav, spf, f"audio {path}")
    info = {
        "source": str(path),
        "input_samples": n_in,
        "trimmed_samples": n_in - (wav.numel() - pad),
        "pad_samples": pad,
    }
    return Target(wav=wav, n_frames=n_frames, name=Path(path).stem, info=info)


@torch.no_grad()
def from_codes(codes: torch.Tensor, codec: VoxtralCodec, name: str, **info) -> Target:
    """Target = fp32 decode of raw codes ``[T, 37]`` (codes known)."""
    wav = codec.decode_windowed(codes.T[None].to(next(codec.parameters()).device))[0, 0].float().cpu()
    return Target(wav=wav, n_frames=codes.shape[0], name=name, codes=codes.cpu(), info=info)


def synthetic(codec: VoxtralCodec, n_frames: int, seed: int) -> Target:
    """Uniform random codes (seeded) through the decoder."""
    g = torch.Generator().manual_seed(seed)
    args = codec.args
    sem = torch.randint(0, args.semantic_codebook_size, (n_frames, 1), generator=g)
    ac = torch.randint(0, args.acoustic_codebook_size, (n_frames, args.acoustic_dim), generator=g)
    return from_codes(torch.cat([sem, ac], 1), codec, f"synthetic-{n_frames}f-s{seed}", kind="synthetic", seed=seed)


def preset(codec: VoxtralCodec, ckpt, voice: str, max_frames: int | None = None) -> Target:
    """A preset voice of the model: voice rows → codes (coordinate descent) → decode."""
    from voxinv.voxtral.voices import VoiceError, preset_codes

    try:
        dec = preset_codes(ckpt, voice)
    except VoiceError as e:  # a missing preset is bad target input: same error class as a bad file
        raise AudioError(str(e)) from e
    codes = dec.codes if max_frames is None else dec.codes[:max_frames]
    return from_codes(
        codes, codec, f"preset-{voice}", kind="preset", voice=voice, decomposition_rel_error=dec.max_rel_error
    )
