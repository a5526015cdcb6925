"""Benchmark logs: the files of a log directory, loading them into one frame of runs and the reference
books, the held-out rule of the speaker scores, and the cells' number formats."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from voxinv.eval.formats import SPEAKER_LOSS, columns
from voxinv.eval.report.runs import ReportError
from voxinv.eval.report.stats import mean_std

RUNS, REFS, GRADERS = "runs.jsonl", "references.jsonl", "graders.jsonl"
# optional, written by the benchmark: {"baseline", "recipe", "plot", "notes", "encoder_seen": {"clips", "why"},
# "early_stop_every"}
SETTINGS = "report.json"
WER_GOAL_MAX = 0.5  # no intelligibility goal where the encoder's own decode has WER ≥ this


def self_graded(row: Mapping, key: str) -> bool:
    """Whether ``row``'s loss used the model behind speaker score ``key`` (rows without ``loss_models``:
    their ``self_graded`` flag, which meant the GE2E ``spk`` term)."""
    losses = row.get("loss_models")
    if not isinstance(losses, (list, tuple)):
        losses = ["spk"] if row.get("self_graded") else []
    return bool(SPEAKER_LOSS.get(key, frozenset()) & set(losses))


def held_out(row: Mapping) -> list[str]:
    """The speaker scores of ``row`` whose model its loss did not use (the ones that may be reported)."""
    return [k for k in columns("bench_graded") if k in SPEAKER_LOSS and not self_graded(row, k)]


def is_bench_log(path: str | Path) -> bool:
    return (Path(path) / RUNS).is_file()


def load(path: str | Path) -> tuple[pd.DataFrame, dict[str, dict], dict[str, dict]]:
    """``(runs, encoder refs by clip, same-speaker refs by clip)`` of a benchmark log directory."""
    path = Path(path)
    if not is_bench_log(path):
        raise ReportError(f"{path}: no {RUNS} (not a benchmark log directory)")
    runs = [json.loads(x) for x in (path / RUNS).read_text().splitlines() if x.strip()]
    if not runs:
        raise ReportError(f"{path / RUNS} is empty: run the benchmark first")
    refs = (
        [json.loads(x) for x in (path / REFS).read_text().splitlines() if x.strip()] if (path / REFS).is_file() else []
    )
    enc = {r["clip"]: r for r in refs if r.get("variant", "encoder") == "encoder"}
    same = {r["clip"]: r for r in refs if r.get("variant") == "same_speaker"}
    graded = (
        [json.loads(x) for x in (path / GRADERS).read_text().splitlines() if x.strip()]
        if (path / GRADERS).is_file()
        else []
    )
    by_run = {(g["variant"], g["clip"], g["seed"]): g for g in graded if g.get("seed") is not None}
    for r in runs:
        r.update({k: v for k, v in by_run.get((r["variant"], r["clip"], r["seed"]), {}).items() if k not in r})
    for g in graded:
        if g.get("seed") is None:
            book = {"encoder": enc, "same_speaker": same}.get(g["variant"])
            if book is not None:
                book.setdefault(g["clip"], {"clip": g["clip"], "variant": g["variant"]}).update(
                    {k: v for k, v in g.items() if k not in book.get(g["clip"], {})}
                )
    df = pd.DataFrame(runs)
    for k in ("spk", *columns("bench_graded")):  # None (grader unavailable) → NaN
        if k in df.columns:
            df[k] = df[k].astype(float)
    df.attrs["original"] = {g["clip"]: g for g in graded if g["variant"] == "original"}
    return df, enc, same


def _ms(v: Sequence, digits: int = 4) -> str:
    """``mean ± std`` of the finite values of ``v`` (``–`` when there are none)."""
    v = [float(x) for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    m, s = mean_std(v)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(v) > 1 else f"{m:.{digits}f}"


def _ms_short(v: Sequence) -> str:
    return _ms(v, digits=3)


def _cpu_s(row: Mapping) -> float:
    """A run's process CPU seconds without evaluations (init + steps), from its last curve point; NaN if absent."""
    c = row.get("curve") or []
    return float(c[-1][5] - c[-1][6]) if c and len(c[-1]) >= 7 else math.nan


def run_cpu_s(curve: list) -> float | None:
    """Process CPU seconds of a whole run (init + steps, evaluations excluded): its last curve point."""
    return None if not curve or len(curve[-1]) < 7 else float(curve[-1][5] - curve[-1][6])
