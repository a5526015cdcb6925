"""Audio I/O (soundfile), resampling (torchaudio), loudness — with one-line errors for bad input."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from voxinv.rundir import atomic_write


class AudioError(ValueError):
    """Unreadable, silent or too short audio."""


def read_audio(path: str | Path, sr: int = 24000) -> torch.Tensor:
    """Read any soundfile-readable file → mono float32 ``[N]`` at ``sr`` (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(
            f"cannot read audio {path} ({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}); "
            "convert it to WAV/FLAC/OGG first, e.g. `ffmpeg -i IN -ar 24000 -ac 1 OUT.wav`"
        ) from e
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} holds no samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    if not torch.isfinite(wav).all():
        raise AudioError(f"audio file {path} contains NaN/inf samples")
    return resample(wav, file_sr, sr)


def resample(wav: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    if sr_in == sr_out:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, sr_in, sr_out)


def write_wav(path: str | Path, wav: torch.Tensor, sr: int = 24000) -> Path:
    """Write mono float32 WAV (no clipping, no dithering: the samples as computed)."""
    x = wav.detach().float().cpu().reshape(-1).numpy()

    def write(tmp: Path) -> None:
        try:
            sf.write(str(tmp), x, sr, subtype="FLOAT", format="WAV")
        except sf.LibsndfileError as e:  # libsndfile reports a full disk as its own error: an OSError here
            full = "space" in str(e).lower()
            raise OSError(errno.ENOSPC if full else errno.EIO, str(e).strip() or "write failed", str(path)) from e

    return atomic_write(path, write)


def trim_silence(wav: torch.Tensor, sr: int, threshold_db: float = -40.0, frame_ms: float = 20.0) -> torch.Tensor:
    """Cut leading/trailing frames whose RMS is ``threshold_db`` below the loudest frame."""
    hop = max(1, int(sr * frame_ms / 1000))
    n = -(-wav.numel() // hop)  # the last partial hop counts too (zero-padded for its RMS)
    frames = torch.nn.functional.pad(wav, (0, n * hop - wav.numel())).view(n, hop)
    rms = frames.pow(2).mean(-1).sqrt()
    db = 20 * torch.log10(rms.clamp_min(1e-12) / rms.max().clamp_min(1e-12))
    loud = (db > threshold_db).nonzero()
    if len(loud) == 0:
        return wav
    return wav[int(loud[0]) * hop : min(wav.numel(), (int(loud[-1]) + 1) * hop)]


def normalize_peak(wav: torch.Tensor, peak: float) -> torch.Tensor:
    m = wav.abs().max()
    if m <= 0:
        raise AudioError("audio is all zeros: cannot normalise loudness")
    return wav * (peak / m)


def check_not_silent(wav: torch.Tensor, name: str = "audio", min_rms_db: float = -60.0) -> None:
    rms = wav.float().pow(2).mean().sqrt()
    if rms <= 10 ** (min_rms_db / 20):
        raise AudioError(
            f"{name} is silent (RMS {20 * torch.log10(rms.clamp_min(1e-20)):.0f} dBFS ≤ {min_rms_db:.0f}): "
            "pass a recording with speech in it"
        )
