"""What an inversion fits: a 24 kHz mono waveform cut into whole 80 ms frames, maybe with known codes.

* ``file``: any soundfile-readable recording → mono 24 kHz, optional silence trim, peak-normalised
  to the level of real preset decodes (≈ 0.08), zero-padded at the end to a whole frame (the pad is
  recorded, never a silent truncation). Length policy: a recording longer than ``max_seconds`` is cut
  to the ``max_seconds`` window with the most active (speech-level) 20 ms frames, and a warning says
  which part was used; ``max_seconds=None`` inverts the whole file (cost grows with its length).
* ``preset``: a preset voice of the model, decomposed into codes and decoded — in-gamut, codes known.
* ``synthetic``: random codes through the decoder — codes known (oracle experiments).

``conf/target/<kind>.yaml`` instantiates a source (:class:`FileTarget`, :class:`PresetTarget`,
:class:`SyntheticTarget`): ``check()`` before any model is fetched, ``build(codec, ckpt)`` after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from voxinv.audio import AudioError, check_not_silent, normalize_peak, read_audio, trim_silence
from voxinv.voxtral.codec import VoxtralCodec

log = logging.getLogger(__name__)


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
    wav = read_audio(path, sr)
    check_not_silent(wav, f"audio {path}")
    n_in = wav.numel()
    if trim:
        wav = trim_silence(wav, sr, trim_db)
    info: dict = {"source": str(path), "input_samples": n_in, "trimmed_samples": n_in - wav.numel()}
    if max_seconds is not None:
        if max_seconds * sr < spf:
            raise AudioError(f"target.max_seconds={max_seconds} is shorter than one 80 ms frame")
        if wav.numel() > max_seconds * sr:
            n = int(max_seconds * sr) // spf * spf  # whole frames
            a = most_active_window(wav, sr, n, trim_db)
            log.warning(
                "target %s: %.1f s after trimming; inverting the %.2f s with the most speech (%.2f–%.2f s of "
                "the trimmed audio; target.max_seconds=%s, target.max_seconds=null inverts the whole file)",
                path,
                wav.numel() / sr,
                n / sr,
                a / sr,
                (a + n) / sr,
                max_seconds,
            )
            info["selected_seconds"] = [round(a / sr, 3), round((a + n) / sr, 3)]
            wav = wav[a : a + n]
    if peak is not None:
        wav = normalize_peak(wav, peak)
    wav, n_frames, pad = _frames_for(wav, spf, f"audio {path}")
    info["pad_samples"] = pad
    return Target(wav=wav, n_frames=n_frames, name=Path(path).stem, info=info)


def most_active_window(wav: torch.Tensor, sr: int, n: int, threshold_db: float, frame_ms: float = 20.0) -> int:
    """Start sample of the ``n``-sample window holding the most frames within ``threshold_db`` of the
    loudest 20 ms frame (speech-level energy); the earliest such window on ties."""
    hop = max(1, int(sr * frame_ms / 1000))
    m = wav.numel() // hop
    rms = wav[: m * hop].view(m, hop).pow(2).mean(-1).sqrt()
    active = (20 * torch.log10(rms.clamp_min(1e-12) / rms.max().clamp_min(1e-12)) > threshold_db).double()
    w = max(1, n // hop)
    if m <= w:
        return 0
    counts = torch.nn.functional.pad(active.cumsum(0), (1, 0))
    score = counts[w:] - counts[:-w]  # [m - w + 1] active frames per window start
    return min(int(score.argmax()) * hop, wav.numel() - n)


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
