"""The manifest file of ``target=manifest``: a ``.csv`` / ``.tsv`` / ``.jsonl`` table of audio files
(a ``path`` column; optional ``speaker``, ``text``, ``name``) read into :class:`Row` s, and how rows are
shared out over shards and processes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


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
    """The rows of a ``.csv`` / ``.tsv`` / ``.jsonl`` manifest with a ``path`` column (optional ``speaker``,
    ``text``, ``name``); relative audio paths are taken relative to the manifest's directory."""
    import pandas as pd

    if not path:
        raise ManifestError("target=manifest needs target.path=<a .csv or .jsonl file with a `path` column>")
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise ManifestError(f"manifest {p} does not exist (target.path: a .csv or .jsonl file with a `path` column)")
    kind = p.suffix.lower()
    try:
        if kind in (".csv", ".tsv"):
            df = pd.read_csv(p, sep="\t" if kind == ".tsv" else ",", dtype=str, keep_default_na=False)
        elif kind in (".jsonl", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            raise ManifestError(f"manifest {p}: unknown format {kind or '(no suffix)'}; use .csv, .tsv or .jsonl")
    except ManifestError:
        raise
    except Exception as e:  # pandas' parser errors: one line naming the file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ManifestError(f"manifest {p} cannot be parsed ({msg})") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    if "path" not in df.columns:
        raise ManifestError(
            f"manifest {p} has no `path` column (columns: {', '.join(df.columns) or 'none'}); "
            "add one with the audio files (optional columns: speaker, text, name)"
        )
    if len(df) == 0:
        raise ManifestError(f"manifest {p} has no rows")
    rows = []
    for i, r in enumerate(df.to_dict("records"), start=1):
        audio = _cell(r.get("path")) or ""
        if audio and not Path(audio).expanduser().is_absolute():
            audio = str(p.parent / audio)
        name = _cell(r.get("name")) or (Path(audio).stem if audio else "missing")
        rows.append(
            Row(
                i,
                str(Path(audio).expanduser()) if audio else "",
                _safe(name),
                _cell(r.get("speaker")),
                _cell(r.get("text")),
            )
        )
    return rows


def _cell(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v):  # JSON null / NaN
        return None
    s = str(v).strip()
    return s or None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "clip"


def shard_rows(rows: list[Row], shard: int, num_shards: int, rank: int = 0, world: int = 1) -> list[Row]:
    """Row r → shard ``(r - 1) % num_shards``; within the shard the j-th row → process ``j % world``."""
    mine = [r for r in rows if (r.row - 1) % num_shards == shard]
    return mine[rank::world]
