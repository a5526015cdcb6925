"""The manifest file of ``target=manifest``: an audio list (:mod:`voxinv.manifests`: ``.csv`` / ``.tsv`` /
``.jsonl`` / ``.json``, a ``path`` column; optional ``speaker``, ``text``, ``name``) read into :class:`Row` s,
and how rows are shared out over shards and processes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from voxinv.manifests import AudioListError, read_audio_list


class ManifestError(ValueError):
    """The manifest (or its settings) cannot be used at all."""


@dataclass
class Row:
    row: int  # 1-based data row
    path: str  # audio file ("" when the row has none)
    name: str  # the run directory's name: <row>-<name>
    speaker: str | None = None
    text: str | None = None

    @property
    def dirname(self) -> str:
        return f"{self.row:05d}-{self.name}"


def read_manifest(path: str | Path) -> list[Row]:
    """The rows of an audio list (:mod:`voxinv.manifests`: ``.csv`` / ``.tsv`` / ``.jsonl`` / ``.json`` with a
    ``path`` column; optional ``speaker``, ``text``, ``name``); relative audio paths are taken relative to
    the manifest's directory."""
    if not path:
        raise ManifestError("target=manifest needs target.path=<a .csv or .jsonl file with a `path` column>")
    try:
        clips = read_audio_list(path)
    except AudioListError as e:
        raise ManifestError(f"{e} (target.path)") from None
    return [
        Row(c.row, c.path, _safe(c.name or (Path(c.path).stem if c.path else "missing")), c.speaker, c.text)
        for c in clips
    ]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "clip"


def shard_rows(rows: list[Row], shard: int, num_shards: int, rank: int = 0, world: int = 1) -> list[Row]:
    """Row r → shard ``(r - 1) % num_shards``; within the shard the j-th row → process ``j % world``."""
    mine = [r for r in rows if (r.row - 1) % num_shards == shard]
    return mine[rank::world]
