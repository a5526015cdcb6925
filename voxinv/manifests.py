"""Audio lists: the one format for every input that names several recordings — ``target=manifest``
(invert each clip) and ``data.sources`` / ``val.sources`` of the encoder trainer (crops for training).

A list is a table, one row a clip:

* ``path`` (required): the audio file; a relative path is relative to the list's folder;
* ``speaker`` (optional): the speaker label;
* ``text`` (optional; ``transcript`` is read the same): what is said;
* ``name`` (optional; ``id`` is read the same): the clip's name.

Files: ``.csv`` / ``.tsv`` (header row), ``.jsonl`` (one object a line) or ``.json``: ``{"clips": [...]}``
(what ``experiments/benchmarks/prepare_real.py`` and ``experiments/encoder_data.py`` write; other keys
and fields are ignored) or a bare list of objects. Column names are case-insensitive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json")
FORMAT = 'a .csv/.tsv/.jsonl file with a `path` column, or a .json {"clips": [{"path": ...}, ...]}'
ALIASES = {"transcript": "text", "id": "name"}  # read as the column on the right when that one is absent


class AudioListError(ValueError):
    """The list cannot be used at all (missing, unparsable, no ``path`` column, no rows)."""


@dataclass
class Clip:
    row: int  # 1-based data row
    path: str  # the audio file, resolved against the list's folder ("" when the row has none)
    speaker: str | None = None
    text: str | None = None
    name: str | None = None


def read_audio_list(path: str | Path) -> list[Clip]:
    """The clips of an audio list (module docstring), in file order; :class:`AudioListError` (one line
    naming the file) when it cannot be used. A row without a path is kept with ``path=""``: the caller
    decides whether that skips the clip or stops."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise AudioListError(f"audio list {p} does not exist ({FORMAT})")
    columns, records = _records(p)
    if columns and "path" not in columns:
        raise AudioListError(
            f"audio list {p} has no `path` column (columns: {', '.join(columns)}); "
            "add one with the audio files (optional columns: speaker, text, name)"
        )
    if not records:
        raise AudioListError(f"audio list {p} has no rows")
    clips = []
    for i, r in enumerate(records, start=1):
        for alias, key in ALIASES.items():
            if _cell(r.get(key)) is None:
                r[key] = r.get(alias)
        audio = _cell(r.get("path")) or ""
        if audio:
            f = Path(audio).expanduser()
            audio = str(f if f.is_absolute() else p.parent / f)
        clips.append(Clip(i, audio, _cell(r.get("speaker")), _cell(r.get("text")), _cell(r.get("name"))))
    return clips


def _records(p: Path) -> tuple[list[str], list[dict]]:
    """(column names, lower-cased; the rows as dicts with those keys)."""
    kind = p.suffix.lower()
    if kind not in SUFFIXES:
        raise AudioListError(f"audio list {p}: unknown format {kind or '(no suffix)'}; use .csv, .tsv, .jsonl or .json")
    try:
        if kind == ".json":
            data = json.loads(p.read_text())
            rows = data.get("clips") if isinstance(data, dict) else data
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise AudioListError(f"audio list {p} is not a clip list: expected {FORMAT}")
        else:
            import pandas as pd

            if kind in (".jsonl", ".ndjson"):
                df = pd.read_json(p, lines=True, dtype=False)
            else:
                df = pd.read_csv(p, sep="\t" if kind == ".tsv" else ",", dtype=str, keep_default_na=False)
            rows = df.to_dict("records")
            columns = [str(c).strip().lower() for c in df.columns]
            return columns, [dict(zip(columns, r.values())) for r in rows]
    except AudioListError:
        raise
    except Exception as e:  # parser errors: one line naming the file
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AudioListError(f"audio list {p} cannot be parsed ({msg})") from None
    rows = [{str(k).strip().lower(): v for k, v in r.items()} for r in rows]
    return sorted({k for r in rows for k in r}), rows


def _cell(v) -> str | None:
    if v is None or (isinstance(v, float) and v != v):  # JSON null / NaN
        return None
    s = str(v).strip()
    return s or None
