"""Grouping runs into configurations and statistics over seeds (pandas): mean ± sample std, winners,
paired differences against a baseline, the ceiling rows."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from voxinv.eval.formats import METRIC, columns, headline, higher_better
from voxinv.eval.report.runs import ReportError, Run, _get, _is_num

SEED_KEYS = ("seed", "+seed", "++seed")
# keys that change how a run is run, tracked or resumed, not what it optimises: runs differing only in
# these are one configuration (an override of the key itself, or of anything under it)
BOOKKEEPING_KEYS = (
    "resume", "logger", "device", "checkpoint_every", "paths", "hydra", "trainer.enable_progress_bar",
    "trainer.log_every_n_steps", "trainer.enable_model_summary", "callbacks.eval_logger", "callbacks.progress_bar",
    "callbacks.checkpoint", "loop.sync_every",
)  # fmt: skip
# resolved-config leaves never used to tell configurations apart (fallback grouping without overrides)
DIFF_IGNORE = ("seed", "target.seed", "init.source", "model.cache_dir", "model.path", *BOOKKEEPING_KEYS)


def is_bookkeeping(key: str) -> bool:
    """``key`` (dotted) is or lies under one of :data:`BOOKKEEPING_KEYS` / :data:`DIFF_IGNORE`."""
    return any(key == k or key.startswith(k + ".") for k in DIFF_IGNORE)


# import-time snapshots of the registry's views (the functions below read the registry when called)
HEADLINE = headline()
PAIRED_KEYS = columns("paired")


# ----------------------------------------------------------------------------------- grouping


def _split(override: str) -> tuple[str, str]:
    """``key=value`` → ``(key, value)``; long floats (Optuna trials) shortened to 4 significant digits."""
    k, _, v = override.partition("=")
    try:
        if "." in v and len(v) > 8:
            v = f"{float(v):.4g}"
    except ValueError:
        pass
    return k.lstrip("+~"), v


def _flatten(d: Any, prefix: str = "") -> dict[str, str]:
    """Nested config → ``{dotted.key: formatted value}`` (the ``hydra`` node left out)."""
    if not isinstance(d, dict):
        return {prefix: _fmt_value(d)}
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if key != "hydra":
            out.update(_flatten(v, key) if isinstance(v, dict) and v else {key: _fmt_value(v)})
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, dict):
        return ",".join(f"{k}:{_fmt_value(x)}" for k, x in v.items())
    if isinstance(v, list | tuple):
        return "[" + ",".join(_fmt_value(x) for x in v) + "]"
    return str(v)


def run_key(run: Run, group_by: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs that name the run's configuration (seed excluded)."""
    if group_by:
        return [(k, _fmt_value(_get(run.config, k))) for k in group_by]
    return [_split(o) for o in run.overrides if _split(o)[0] not in SEED_KEYS and not is_bookkeeping(_split(o)[0])]


def group_runs(runs: Sequence[Run], group_by: Sequence[str] | None = None) -> tuple[dict[str, list[Run]], list[str]]:
    """Group runs by configuration → ``({label: runs}, common)``, groups in first-seen order.

    ``label`` lists only what differs between groups; ``common`` the ``key=value`` pairs all share.
    Runs without ``.hydra/overrides.yaml`` (and no ``group_by``) are told apart by the resolved-config
    leaves that differ between runs (seed, target seed and paths ignored).
    """
    keys: list[list[tuple[str, str]]] = []
    if not group_by and runs and not all(r.has_overrides for r in runs):
        flat = [_flatten(r.config) for r in runs]
        all_keys = sorted(set().union(*flat))
        varying = [k for k in all_keys if not is_bookkeeping(k) and len({f.get(k, "<unset>") for f in flat}) > 1]
        keys = [[(k, f[k]) for k in varying if k in f] for f in flat]
    else:
        keys = [run_key(r, group_by) for r in runs]
    all_pairs = [dict(k) for k in keys]
    names = list(dict.fromkeys(k for ks in keys for k, _ in ks))
    common = [
        n for n in names if all(n in p for p in all_pairs) and len({p[n] for p in all_pairs}) == 1
    ]  # same value in every run
    groups: dict[str, list[Run]] = {}
    for run, ks in zip(runs, keys):
        shown = [f"{k}={v}" for k, v in ks if k not in common]
        label = " ".join(shown) or "all runs"
        run.label = label
        groups.setdefault(label, []).append(run)
    return groups, [f"{n}={all_pairs[0][n]}" for n in common] if all_pairs else []


# -------------------------------------------------------------------------------- statistics


def random_reference(runs: Iterable[Run]) -> dict[str, float]:
    """Per target name: mean step-0 SI-SDR of random-init runs (the SI-SDR of random codes)."""
    rows = [
        (r.target, float(r.history[0]["si_sdr"]))
        for r in runs
        if r.init_kind == "random"
        and r.history
        and r.history[0].get("step") == 0
        and _is_num(r.history[0].get("si_sdr"))
    ]
    if not rows:
        return {}
    return pd.DataFrame(rows, columns=["target", "si_sdr"]).groupby("target", sort=False)["si_sdr"].mean().to_dict()


@dataclass
class GroupStats:
    label: str
    runs: list[Run]
    mean: dict[str, float]
    std: dict[str, float]
    count: dict[str, int]

    @property
    def n(self) -> int:
        return len(self.runs)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; 0 for a single value)."""
    s = pd.Series(values, dtype="float64")
    if s.empty:
        return math.nan, math.nan
    return float(s.mean()), float(s.std(ddof=1)) if len(s) > 1 else 0.0


def run_values(run: Run, reference: dict[str, float] | None = None) -> dict[str, float]:
    """:meth:`Run.values` plus ``si_sdr_gain_per_s`` when the target's random-codes SI-SDR is known."""
    v = run.values()
    ref = (reference or {}).get(run.target)
    if ref is not None and "si_sdr" in v and v.get("compute_s"):
        v["si_sdr_gain_per_s"] = (v["si_sdr"] - ref) / v["compute_s"]
    return v


def values_frame(groups: dict[str, list[Run]], reference: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per run: ``label``, ``target``, ``seed`` and every numeric value (non-finite → NaN)."""
    rows = [
        {"label": label, "target": r.target, "seed": r.seed, **run_values(r, reference)}
        for label, runs in groups.items()
        for r in runs
    ]
    return pd.DataFrame(rows).replace([np.inf, -np.inf], np.nan)


def aggregate(groups: dict[str, list[Run]], reference: dict[str, float] | None = None) -> list[GroupStats]:
    """Mean ± sample std over each group's runs of every numeric value (NaN/inf-free values only)."""
    df = values_frame(groups, reference)
    if df.empty:
        return []
    keys = [c for c in df.columns if c not in ("label", "target", "seed")]
    agg = df.groupby("label", sort=False)[keys].agg(["mean", "std", "count"])
    out = []
    for label, runs in groups.items():
        row = agg.loc[label]
        count = {k: int(row[(k, "count")]) for k in keys if row[(k, "count")] > 0}
        mean = {k: float(row[(k, "mean")]) for k in count}
        std = {k: float(row[(k, "std")]) if count[k] > 1 else 0.0 for k in count}  # ddof 1; one value: 0
        out.append(GroupStats(label, list(runs), mean, std, count))
    return out


def sort_stats(stats: Sequence[GroupStats], sort_by: str = "si_sdr") -> list[GroupStats]:
    """Best first by ``sort_by`` (direction from the metric registry, higher first when unknown); missing last."""
    hb = higher_better(sort_by)

    def key(s: GroupStats) -> tuple[int, float]:
        v = s.mean.get(sort_by)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, -v if hb else v)

    return sorted(stats, key=key)


def winners(stats: Sequence[GroupStats], keys: Sequence[str] | None = None) -> dict[str, tuple[str, float]]:
    """``{metric: (label, mean)}`` of the best configuration per metric (by mean; default: the registry's
    headline metrics); ties joined by " = "."""
    out = {}
    for k in headline() if keys is None else keys:
        have = [s for s in stats if k in s.mean]
        if have:
            best = sort_stats(have, k)[0].mean[k]
            tied = [s.label for s in have if math.isclose(s.mean[k], best, rel_tol=1e-9, abs_tol=1e-9)]
            out[k] = (" = ".join(tied), best)
    return out


def paired_differences(
    groups: dict[str, list[Run]],
    baseline: str,
    reference: dict[str, float] | None = None,
    keys: Sequence[str] | None = None,
) -> list[dict]:
    """Per-target differences of each group against the ``baseline`` group (same targets = same seeds):
    :func:`paired_frame` over the runs' values (``keys`` default: the registry's ``paired`` view)."""
    if baseline not in groups:
        raise ReportError(f"--baseline {baseline!r} is not a configuration here: choose from {list(groups)}")
    return paired_frame(values_frame(groups, reference), baseline, columns("paired") if keys is None else keys)


def paired_frame(
    df: pd.DataFrame, baseline: str, keys: Sequence[str], higher_better: dict[str, bool] | None = None
) -> list[dict]:
    """Paired differences in a frame with one row per run (``label``, ``target`` and value columns).

    Returns ``[{"label", "n", "mean": {k}, "std": {k}, "better": {k}}]``: mean ± sample std over the
    targets both labels have of (label − baseline), and on how many of them the label is better
    (direction from ``higher_better``, else the metric registry). Rows sharing a target within a label
    are averaged first (pass a target per (clip, seed) to pair seeds too).
    """
    hb = {k: METRIC[k].higher_better for k in keys if k in METRIC} | (higher_better or {})
    keys = [k for k in keys if k in df.columns]
    per_target = df.groupby(["label", "target"], sort=False)[keys].mean()  # [label × target, keys]
    base = per_target.loc[baseline]
    out = []
    for label in dict.fromkeys(df["label"]):
        if label == baseline:
            continue
        mine = per_target.loc[label]
        common = mine.index.intersection(base.index, sort=False)
        d = mine.loc[common] - base.loc[common]  # [targets, keys], NaN where either lacks the value
        row: dict = {"label": label, "n": len(common), "mean": {}, "std": {}, "better": {}}
        for k in keys:
            x = d[k].dropna()
            if len(x):
                row["mean"][k], row["std"][k] = mean_std(x.tolist())
                row["better"][k] = int((x > 1e-9).sum() if hb[k] else (x < -1e-9).sum())
        out.append(row)
    return out


def ceiling_rows(runs: Sequence[Run]) -> list[dict]:
    """Reference rows: the oracle in-gamut ceiling (codes known) and/or the best run found (real targets)."""
    rows = []
    if any(r.oracle for r in runs):
        rows.append(
            {
                "label": "ceiling: the true codes' own decode (oracle, in-gamut)",
                "values": {k: m.oracle for k, m in METRIC.items() if m.oracle is not None},
                "note": "the target IS the decode of the true codes: reconstruction identical, SI-SDR = ∞ "
                "(the metric saturates at ≈ +170–180 dB numerically), mel = MRSTFT = 0, 100 % codes",
            }
        )
    real = [r for r in runs if not r.oracle]
    if real:
        signal = {k for k in columns("report") if METRIC[k].group == "signal"}  # the waveform scores
        best: dict[str, float] = {}
        for r in real:
            for k, v in r.values().items():
                if k in signal and math.isfinite(v):
                    better = METRIC[k].higher_better
                    if k not in best or (v > best[k] if better else v < best[k]):
                        best[k] = v
        rows.append(
            {
                "label": "best in-gamut found (best single run per metric, real targets)",
                "values": best,
                "note": "codes unknown: no run can beat the decoder's gamut; the best found is a lower bound on it",
            }
        )
    return rows
