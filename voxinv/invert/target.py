"""What an inversion fits: a 24 kHz mono waveform cut into whole 80 ms frames, maybe with known codes.

* ``file``: any soundfile-readable recording → mono 24 kHz, optional silence trim, peak-normalised
  to the level of real preset decodes (≈ 0.08), zero-padded at the end to a whole frame (the pad is
  recorded, never a silent truncation). Length policy: a recording longer than ``max_seconds`` is
  scanned in blocks and cut to the ``max_seconds`` window with the most speech (20 ms frames that
  webrtcvad calls speech and that are within ``trim_db`` of the loudest; by level alone when webrtcvad
  is missing or finds none), and only that span is read and resampled; a warning says which part was
  used. ``max_seconds=None`` inverts the whole file (cost grows with its length).
* ``preset``: a preset voice of the model, decomposed into codes and decoded — in-gamut, codes known.
* ``synthetic``: random codes through the decoder — codes known (oracle experiments).

``conf/target/<kind>.yaml`` instantiates a source (:class:`FileTarget`, :class:`PresetTarget`,
:class:`SyntheticTarget`): ``check()`` before any model is fetched, ``build(codec, ckpt)`` after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from voxinv.audio import (
    FRAME_S,
    AudioError,
    check_not_silent,
    normalize_peak,
    open_audio,
    read_audio,
    read_span,
    scan,
    trim_silence,
)
from voxinv.voxtral.codec import VoxtralCodec

log = logging.getLogger(__name__)


@dataclass
class Target:
    wav: torch.Tensor  # [N] float32, N = T · samples_per_frame
    n_frames: int
    name: str
    codes: torch.Tensor | None = None  # raw [T, 37] when known
    info: dict = field(default_factory=dict)


def _frames_for(wav: torch.Tensor, spf: int, name: str, sr: int, n_in: int) -> tuple[torch.Tensor, int, int]:
    if wav.numel() < spf:
        trimmed = f" ({1000 * wav.numel() / sr:.0f} ms after trimming silence)" if wav.numel() < n_in else ""
        raise AudioError(
            f"{name} is {1000 * n_in / sr:.0f} ms long{trimmed}; at least one 80 ms frame ({spf} samples) is needed"
        )
    n_frames = -(-wav.numel() // spf)  # ceil: the tail is padded, never dropped
    pad = n_frames * spf - wav.numel()
    return torch.nn.functional.pad(wav, (0, pad)), n_frames, pad


def from_file(path: str | Path, codec: VoxtralCodec, **kw) -> Target:
    """Load a recording as a target for ``codec`` (:func:`load_file`'s options: conf/target/file.yaml)."""
    return load_file(path, codec.sampling_rate, codec.samples_per_frame, **kw)


def load_file(
    path: str | Path,
    sr: int,
    spf: int,
    *,
    trim: bool,
    trim_db: float,
    peak: float | None,
    max_seconds: float | None,
) -> Target:
    """Read and check a recording → target at ``sr`` Hz in whole ``spf``-sample frames (see module docstring)."""
    if max_seconds is not None and max_seconds * sr < spf:
        raise AudioError(f"target.max_seconds={max_seconds} is shorter than one 80 ms frame")
    with open_audio(path) as f:
        seconds = f.frames / f.samplerate
    if max_seconds is not None and seconds > max_seconds:
        wav, info = _long_file(path, sr, spf, trim, trim_db, max_seconds)
    else:
        wav = read_audio(path, sr)
        check_not_silent(wav, f"audio {path}")
        n_in = wav.numel()
        if trim:
            wav = trim_silence(wav, sr, trim_db)
        info = {"source": str(path), "input_samples": n_in, "trimmed_samples": n_in - wav.numel()}
    if peak is not None:
        wav = normalize_peak(wav, peak)
    wav, n_frames, pad = _frames_for(wav, spf, f"audio {path}", sr, info["input_samples"])
    info["pad_samples"] = pad
    return Target(wav=wav, n_frames=n_frames, name=Path(path).stem, info=info)


def _long_file(path, sr: int, spf: int, trim: bool, trim_db: float, max_seconds: float) -> tuple[torch.Tensor, dict]:
    """A recording longer than ``max_seconds``: scanned in blocks (voice activity per 20 ms frame), then
    only the ``max_seconds`` window (whole frames) with the most speech frames is read and resampled."""
    s = scan(path)
    n_in = int(round(s.frames * sr / s.samplerate))
    rms = s.rms
    whole_rms = float(np.sqrt(np.mean(np.square(rms)))) if len(rms) else 0.0
    check_not_silent(torch.tensor([whole_rms]), f"audio {path}")  # the RMS of the whole file, as for short ones
    db = 20 * np.log10(np.maximum(rms, 1e-12) / max(rms.max(), 1e-12))
    level = db > trim_db
    loud = np.flatnonzero(level)
    lo, hi = (int(loud[0]), int(loud[-1]) + 1) if trim and len(loud) else (0, len(rms))  # trimmed, 20 ms frames
    n = int(max_seconds * sr) // spf * spf  # whole frames
    w = int(round(n / sr / FRAME_S))
    info: dict = {"source": str(path), "input_samples": n_in, "trimmed_samples": n_in - int((hi - lo) * FRAME_S * sr)}
    if hi - lo <= w:  # the trimmed audio fits: all of it
        return read_span(path, sr, lo * FRAME_S, (hi - lo) * FRAME_S, s.channel), info
    how = "voice activity (webrtcvad)"
    active = level & s.speech if s.speech is not None else None
    if active is None or not active[lo:hi].any():
        why = "webrtcvad is not installed" if s.speech is None else "webrtcvad found no speech"
        log.warning("target %s: %s; choosing the window by level (frames within trim_db of the loudest)", path, why)
        active, how = level, "level"
    counts = np.concatenate([[0], np.cumsum(active[lo:hi], dtype=np.int64)])
    a = lo + int(np.argmax(counts[w:] - counts[:-w]))  # the earliest window with the most active frames
    t0, t1 = a * FRAME_S, a * FRAME_S + n / sr
    log.warning(
        "target %s: %.1f s (%.1f s after trimming); inverting the %.2f s with the most speech by %s (%.2f–%.2f s "
        "of the file; target.max_seconds=%s, target.max_seconds=null inverts the whole file)",
        path,
        s.frames / s.samplerate,
        (hi - lo) * FRAME_S,
        n / sr,
        how,
        t0,
        t1,
        max_seconds,
    )
    info["selected_seconds"] = [round(t0, 3), round(t1, 3)]
    info["selected_by"] = "vad" if how != "level" else "level"
    return read_span(path, sr, t0, n / sr, s.channel), info


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


# --------------------------------------------------------------------------- conf/target sources
class TargetSource:
    """A ``target`` option (``kind`` is its name); :meth:`check` runs before the model is loaded."""

    def __init__(self, kind: str):
        self.kind = kind

    def check(self) -> None:
        """Validate what can be validated without the model (bad input fails before any download)."""

    def build(self, codec: VoxtralCodec, ckpt) -> Target:
        raise NotImplementedError


class FileTarget(TargetSource):
    """``target=file``: a recording, read and checked by :meth:`check` at the released codec's rate."""

    def __init__(
        self, kind: str, path: str | None, trim: bool, trim_db: float, peak: float | None, max_seconds: float | None
    ):
        super().__init__(kind)
        self.path, self.read = path, {"trim": trim, "trim_db": trim_db, "peak": peak, "max_seconds": max_seconds}
        self._checked: tuple[tuple[int, int], Target] | None = None  # ((sr, spf), target read by check)

    def check(self) -> None:
        from voxinv.voxtral.models import released_frame

        if not self.path:
            raise ValueError(
                f"target={self.kind} needs target.path=<audio file> (or try experiment=demo: a shipped clip on the offline proxy)"
            )
        frame = released_frame()  # build re-reads the file for a model with other values
        self._checked = frame, load_file(self.path, *frame, **self.read)

    def build(self, codec: VoxtralCodec, ckpt) -> Target:
        if self._checked is not None and self._checked[0] == (codec.sampling_rate, codec.samples_per_frame):
            return self._checked[1]
        if not self.path:
            raise ValueError(f"target={self.kind} needs target.path=<audio file>")
        return from_file(self.path, codec, **self.read)


class PresetTarget(TargetSource):
    """``target=preset``: a preset voice of the model (codes known)."""

    def __init__(self, kind: str, voice: str, max_frames: int | None):
        super().__init__(kind)
        self.voice, self.max_frames = voice, max_frames

    def build(self, codec: VoxtralCodec, ckpt) -> Target:
        return preset(codec, ckpt, self.voice, self.max_frames)


class SyntheticTarget(TargetSource):
    """``target=synthetic``: seeded random codes through the decoder (codes known)."""

    def __init__(self, kind: str, n_frames: int, seed: int):
        super().__init__(kind)
        self.n_frames, self.seed = int(n_frames), int(seed)

    def build(self, codec: VoxtralCodec, ckpt) -> Target:
        return synthetic(codec, self.n_frames, self.seed)


def build_target(cfg, codec: VoxtralCodec, ckpt) -> Target:
    """The target of the ``target`` group ``cfg`` (instantiated, checked, built)."""
    from hydra.utils import instantiate

    source = instantiate(cfg)
    source.check()
    return source.build(codec, ckpt)
