"""Training data of the encoder: recordings named by audio lists (:mod:`voxinv.manifests`), folders or
files, speaker filters, and the crops a run draws from them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from voxinv.manifests import SUFFIXES, read_audio_list

AUDIO_EXT = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
Source = tuple[Path, str, str]  # (audio file, speaker, name)


@dataclass
class Recording:
    wav: torch.Tensor  # [N] float32, 24 kHz, peak-normalised
    speaker: str
    name: str


def _listed(p: Path) -> list[Source]:
    """The clips of an audio list; a clip without a speaker is labelled by the list's folder."""
    out = []
    for c in read_audio_list(p):
        if not c.path:
            raise ValueError(f"audio list {p}: row {c.row} has no path; give every clip an audio file")
        f = Path(c.path)
        out.append((f, c.speaker or p.parent.name, c.name or f.stem))
    return out


def list_sources(sources, speakers=None, exclude=()) -> list[Source]:
    """``(file, speaker, name)`` of every recording in ``sources`` (audio lists, folders, files), filtered."""
    if not sources:
        raise ValueError(
            "data.sources is empty: pass manifest.json files, audio folders or files, e.g. "
            "data.sources=[data/encoder/train/manifest.json] (experiments/encoder_data.py makes one)"
        )
    found: list[Source] = []
    for s in sources:
        p = Path(str(s)).expanduser()
        if p.is_dir():
            found += [(f, f.parent.name, f.stem) for f in sorted(p.rglob("*")) if f.suffix.lower() in AUDIO_EXT]
        elif p.suffix.lower() in SUFFIXES and p.is_file():
            found += _listed(p)
        elif p.is_file():
            found.append((p, p.parent.name, p.stem))
        else:
            raise FileNotFoundError(f"data source {p} does not exist")
    keep = set(speakers) if speakers else None
    found = [r for r in found if (keep is None or r[1] in keep) and r[1] not in set(exclude)]
    if not found:
        raise ValueError(
            f"no recordings left in {list(sources)} after the speaker filters (speakers={speakers}, "
            f"exclude={list(exclude)})"
        )
    return found


def check_sources(cfg: DictConfig) -> tuple[list[Source], list[Source]]:
    """The training and validation files (speaker-disjoint); one-line errors before anything is written."""
    d = cfg.data
    train_files = list_sources(d.sources, d.speakers, d.exclude_speakers)
    val_files = list_sources(cfg.val.sources, cfg.val.speakers, cfg.val.exclude_speakers) if cfg.val.sources else []
    shared = sorted({s for _, s, _ in train_files} & {s for _, s, _ in val_files})
    if shared:
        raise ValueError(
            f"validation speakers {shared} are also in the training data: add them to data.exclude_speakers"
        )
    return train_files, val_files


def load_recordings(files: list[Source], sr: int, peak: float) -> list[Recording]:
    from voxinv.audio import normalize_peak, read_audio

    return [Recording(normalize_peak(read_audio(f, sr), peak), spk, name) for f, spk, name in files]


class RandomCrops(torch.utils.data.Dataset):
    """Item ``i`` = one crop ``[L]`` drawn by a generator seeded with ``(seed, offset + i)``.

    Recordings are picked in proportion to their length; a crop longer than the recording is
    zero-padded; gain is uniform in dB. Indexed draws make DDP shards disjoint (DistributedSampler
    splits the indices) and let a resumed run continue the same stream (``offset``).
    """

    def __init__(
        self, recs: list[Recording], n: int, length: int, gain_db, min_rms_db: float, seed: int, offset: int = 0
    ):
        self.recs, self.n, self.length = recs, n, length
        self.lo, self.hi = float(gain_db[0]), float(gain_db[1])
        self.min_rms = 10 ** (min_rms_db / 20)
        self.seed, self.offset = seed, offset
        lens = torch.tensor([float(r.wav.numel()) for r in recs])
        self.p = lens / lens.sum()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.offset + i)
        for _ in range(10):
            w = self.recs[int(torch.multinomial(self.p, 1, generator=g))].wav
            if w.numel() > self.length:
                s = int(torch.randint(0, w.numel() - self.length + 1, (1,), generator=g))
                x = w[s : s + self.length]
            else:
                x = F.pad(w, (0, self.length - w.numel()))
            if x.pow(2).mean().sqrt() >= self.min_rms:
                break
        gain = 10 ** ((self.lo + (self.hi - self.lo) * float(torch.rand((), generator=g))) / 20)
        return x * gain


def fixed_crops(recs: list[Recording], n: int, length: int) -> torch.Tensor:
    """The first ``length`` samples of up to ``n`` recordings (zero-padded): ``[n, length]``."""
    return torch.stack([F.pad(r.wav[:length], (0, max(0, length - r.wav.numel()))) for r in recs[:n]])
