"""Audio I/O (soundfile), resampling (torchaudio), loudness — with one-line errors for bad input.

Long recordings are scanned in blocks (:func:`scan`: voice activity per 20 ms frame at 16 kHz) and
only the part kept is read and resampled (:func:`read_span`), so memory does not grow with the file."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from voxinv.rundir import atomic_write

log = logging.getLogger("voxinv")

CANCEL_DB = -30.0  # a channel mix this far below its loudest channel: the channels cancel (L / −L)


class AudioError(ValueError):
    """Unreadable, silent or too short audio."""


def _cannot_read(path: Path, e: Exception) -> AudioError:
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return AudioError(
        f"cannot read audio {path} ({first}); convert it to WAV/FLAC/OGG first, e.g. `ffmpeg -i IN -ar 24000 -ac 1 OUT.wav`"
    )


def open_audio(path: str | Path) -> sf.SoundFile:
    """The recording opened for (block) reading; :class:`AudioError` when missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file {path} does not exist")
    try:
        f = sf.SoundFile(str(path))
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise _cannot_read(path, e) from e
    if f.frames == 0:
        f.close()
        raise AudioError(f"audio file {path} holds no samples")
    return f


def mono_channel(data: np.ndarray, name: str = "audio") -> int:
    """Which channel makes the mono signal of ``data`` ``[N, C]``: -1 = their mean, or the loudest one
    when the mean cancels (a channel inverted against the other: L / −L would average to silence)."""
    if data.shape[1] == 1:
        return -1
    ch = np.sqrt(np.square(data, dtype=np.float64).mean(0))
    mix = float(np.sqrt(np.square(data.mean(1), dtype=np.float64).mean()))
    if ch.max() > 0 and mix < ch.max() * 10 ** (CANCEL_DB / 20):
        i = int(ch.argmax())
        log.warning("%s: its channels cancel when averaged (one is the other inverted): using channel %d", name, i + 1)
        return i
    return -1


def _mono(data: np.ndarray, channel: int) -> np.ndarray:
    return np.ascontiguousarray(data.mean(axis=1) if channel < 0 else data[:, channel])


def read_audio(path: str | Path, sr: int = 24000) -> torch.Tensor:
    """Read any soundfile-readable file → mono float32 ``[N]`` at ``sr`` (channels averaged, or the
    loudest channel when they cancel: :func:`mono_channel`)."""
    path = Path(path)
    with open_audio(path) as f:
        try:
            data, file_sr = f.read(dtype="float32", always_2d=True), f.samplerate
        except Exception as e:
            raise _cannot_read(path, e) from e
    wav = torch.from_numpy(_mono(data, mono_channel(data, f"audio {path}")))
    if not torch.isfinite(wav).all():
        raise AudioError(f"audio file {path} contains NaN/inf samples")
    return resample(wav, file_sr, sr)


# ------------------------------------------------------------------ long files: scan, then read a span
VAD_RATE = 16000  # webrtcvad takes 8/16/32/48 kHz 16-bit PCM in 10/20/30 ms frames
FRAME_S = 0.02


@dataclass
class Scan:
    """A recording scanned in blocks: per 20 ms frame its RMS and (webrtcvad) whether it holds speech."""

    rms: np.ndarray  # [m] float64, of the mono signal at 16 kHz
    speech: np.ndarray | None  # [m] bool: webrtcvad calls it speech and it is voiced; None without webrtcvad
    channel: int  # mono_channel of the file (decided on the first block)
    samplerate: int  # the file's
    frames: int  # the file's length in samples at its own rate


def vad(mode: int = 3):
    """A webrtcvad detector (``mode`` 3: fewest false positives on noise), or None when not installed."""
    try:
        import webrtcvad
    except ImportError:
        return None
    return webrtcvad.Vad(mode)


def scan(path: str | Path, block_s: float = 30.0, vad_mode: int = 3) -> Scan:
    """Read ``path`` in ``block_s`` blocks at its own rate (never the whole file at once): the mono
    signal resampled to 16 kHz block by block, its 20 ms RMS, then voice activity over the
    peak-normalised 16 kHz signal (the detector's state runs through the file: it adapts to steady noise)."""
    path = Path(path)
    hop = int(VAD_RATE * FRAME_S)
    channel, filled = None, 0
    with open_audio(path) as f:
        sr_in, n = f.samplerate, f.frames
        size = max(hop, int(block_s * sr_in))
        x16 = np.empty(int(n * VAD_RATE / sr_in) + 2 * (n // size + 2), np.float32)  # 115 MB for 30 min
        try:
            for block in f.blocks(blocksize=size, dtype="float32", always_2d=True):
                if not np.isfinite(block).all():
                    raise AudioError(f"audio file {path} contains NaN/inf samples")
                if channel is None:
                    channel = mono_channel(block, f"audio {path}")
                x = resample(torch.from_numpy(_mono(block, channel)), sr_in, VAD_RATE).numpy()
                x16[filled : filled + len(x)] = x
                filled += len(x)
        except AudioError:
            raise
        except Exception as e:
            raise _cannot_read(path, e) from e
    x16 = x16[: filled // hop * hop]
    frames = x16.reshape(-1, hop)
    rms = np.concatenate([np.sqrt(np.square(c, dtype=np.float64).mean(1)) for c in _chunks(frames)] or [np.zeros(0)])
    detector, speech = vad(vad_mode), None
    if detector is not None and len(frames):
        scale = 0.5 * 32767 / (float(np.abs(x16).max()) or 1.0)  # peak-normalised: the detector is level-dependent
        speech = np.zeros(len(frames), bool)
        for i, c in zip(range(0, len(frames), CHUNK), _chunks(frames)):  # bounded temporaries for hour-long files
            pcm = np.clip(c * scale, -32768, 32767).astype("<i2")
            vad_ok = np.fromiter((detector.is_speech(r.tobytes(), VAD_RATE) for r in pcm), bool, len(pcm))
            # webrtcvad takes a few seconds to adapt to loud steady noise and calls it speech meanwhile: keep
            # the frames whose spectrum is also not noise-flat (voiced speech ≈ 0.01–0.1, white noise ≈ 0.56)
            speech[i : i + len(c)] = vad_ok & (flatness(c) < MAX_FLATNESS)
    return Scan(rms, speech, -1 if channel is None else channel, sr_in, n)


CHUNK = 8192  # 20 ms frames per vectorised step (≈ 2.6 s of 16 kHz audio per MB of temporaries)


def _chunks(frames: np.ndarray):
    return (frames[i : i + CHUNK] for i in range(0, len(frames), CHUNK))


MAX_FLATNESS = 0.3


def flatness(frames: np.ndarray) -> np.ndarray:
    """Spectral flatness (geometric / arithmetic mean of the Hann-windowed power spectrum) per row."""
    p = np.abs(np.fft.rfft(frames * np.hanning(frames.shape[1]).astype(np.float32), axis=1)) ** 2 + 1e-20
    return np.exp(np.log(p).mean(1)) / p.mean(1)


def read_span(
    path: str | Path, sr: int, start_s: float, seconds: float, channel: int, margin_s: float = 0.05
) -> torch.Tensor:
    """``seconds`` of ``path`` from ``start_s`` (its own time axis), mono, at ``sr``: only that span
    (plus ``margin_s`` each side for the resampler, cut off after) is read and resampled."""
    with open_audio(path) as f:
        sr_in = f.samplerate
        a = max(0, int(round((start_s - margin_s) * sr_in)))
        b = min(f.frames, int(round((start_s + seconds + margin_s) * sr_in)))
        f.seek(a)
        data = f.read(b - a, dtype="float32", always_2d=True)
    x = resample(torch.from_numpy(_mono(data, channel)), sr_in, sr)
    off = int(round((start_s - a / sr_in) * sr))
    return x[off : off + int(round(seconds * sr))].contiguous()


def resample(wav: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    if sr_in == sr_out:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, sr_in, sr_out)


def write_wav(path: str | Path, wav: torch.Tensor, sr: int = 24000) -> Path:
    """Write mono float32 WAV (no clipping, no dithering: the samples as computed)."""
    x = wav.detach().float().cpu().reshape(-1).numpy()

    def write(tmp: Path) -> None:
        buf = io.BytesIO()  # encoded in memory, written by Python: a full disk is a real OSError (ENOSPC)
        sf.write(buf, x, sr, subtype="FLOAT", format="WAV")
        tmp.write_bytes(buf.getvalue())

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
