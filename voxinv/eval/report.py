"""Sweep reports: ``python -m voxinv.report SWEEP_DIR [SWEEP_DIR …] [--out DIR] [--group-by KEYS]``.

Walks the run directories under each sweep directory (any directory holding ``metrics.json``), groups
runs by configuration and aggregates mean ± sample std (ddof 1) over seeds, then writes:

* ``report.md``: one row per configuration, sorted by ``--sort`` (default SI-SDR), with ceiling rows,
  the winner per headline metric and a per-run table;
* ``summary.json``: the same numbers, machine-readable;
* ``curves.png`` (SI-SDR and mel vs step), ``code_acc.png`` (semantic / acoustic code accuracy vs
  step, oracle targets only), ``spectrograms.png`` (one target and each configuration's
  reconstruction of it).

Grouping: by the run's Hydra overrides (``.hydra/overrides.yaml``) minus ``seed``; without that file,
by the resolved-config leaves that differ between runs; or by ``--group-by`` keys of the resolved
config (``config.yaml``), e.g. ``--group-by loss.weights,codes.semantic``.

Compute columns: ``compute s`` = the run's wall time + the wall time of the run it warm-started from
(``init.source`` when it is a run directory), so a warm start is charged for its source. ``ΔSI-SDR/s``
= (SI-SDR − SI-SDR of random codes on the same target) / compute s, the random-codes SI-SDR being the
step-0 evaluation of random-init runs on that target (found among the runs or ``--reference`` dirs;
absent otherwise). ``Δac%/s`` = (acoustic accuracy − chance 100/21 %) / compute s.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxinv import rundir

AC_LEVELS = 21  # acoustic FSQ levels: chance accuracy 100/21 %
SEM_ENTRIES = 8192  # semantic codebook entries: chance accuracy 100/8192 %
AC_CHANCE = 100.0 / AC_LEVELS
SEED_KEYS = ("seed", "+seed", "++seed")
# resolved-config leaves never used to tell configurations apart (fallback grouping without overrides)
DIFF_IGNORE = ("seed", "target.seed", "init.source", "model.cache_dir", "model.path")


class ReportError(ValueError):
    """Inputs the report cannot use (no runs, bad arguments)."""


class WandbUnavailable(RuntimeError):
    """W&B cannot be queried here (offline, not logged in, no network)."""


@dataclass(frozen=True)
class Metric:
    key: str
    header: str
    fmt: str
    higher_better: bool
    doc: str


METRICS: tuple[Metric, ...] = (
    Metric("si_sdr", "SI-SDR dB", "{:.2f}", True, "scale-invariant SDR of the exported reconstruction"),
    Metric("mel", "mel", "{:.4f}", False, "multi-scale log-mel L1 (80 mels, n_fft 512/1024/2048)"),
    Metric("mrstft", "MRSTFT", "{:.3f}", False, "auraloss multi-resolution STFT distance (defaults)"),
    Metric("code_sem_acc", "sem %", "{:.1f}", True, "semantic codes equal to the true ones"),
    Metric("code_ac_acc", "ac %", "{:.1f}", True, "acoustic codes equal to the true ones (chance 4.8 %)"),
    Metric("objective", "objective", "{:.4g}", False, "the run's own loss of the exported codes (per-loss scale)"),
    Metric("wall_s", "wall s", "{:.1f}", False, "run wall time (init + steps + export)"),
    Metric("init_s", "init s", "{:.1f}", False, "initialisation time (coordinate descent; 0 for random)"),
    Metric("compute_s", "compute s", "{:.1f}", False, "wall s + the warm-start source run's wall s"),
    Metric("si_sdr_gain_per_s", "ΔSI-SDR/s", "{:.2f}", True, "(SI-SDR − random-codes SI-SDR) / compute s"),
    Metric("ac_gain_per_s", "Δac%/s", "{:.2f}", True, "(ac % − 100/21) / compute s"),
)
METRIC = {m.key: m for m in METRICS}
HEADLINE = ("si_sdr", "mel", "code_sem_acc", "code_ac_acc", "si_sdr_gain_per_s", "ac_gain_per_s")
CURVE_METRICS = ("si_sdr", "mel")
CODE_CURVE_METRICS = ("code_sem_acc", "code_ac_acc")
LOG_METRICS = ("mel", "mrstft")


# --------------------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One finished inversion: its directory, ``metrics.json``, overrides and resolved config."""

    path: Path
    metrics: dict
    overrides: list[str] = field(default_factory=list)
    config: dict = field(default_factory=dict)
    source_s: float = 0.0  # wall time of the warm-start source run(s)
    has_overrides: bool = False
    label: str = ""  # set by group_runs

    @property
    def seed(self) -> Any:
        return self.metrics.get("seed", self.config.get("seed"))

    @property
    def target(self) -> str:
        t = self.metrics.get("target") or {}
        return str(t.get("name", "?")) if isinstance(t, dict) else str(t)

    @property
    def oracle(self) -> bool:
        """Codes of the target known (synthetic / preset targets): code accuracy and a perfect ceiling."""
        return isinstance(self.metrics.get("truth"), dict)

    @property
    def init_kind(self) -> str:
        i = self.metrics.get("init")
        return str(i.get("kind")) if isinstance(i, dict) else str(_get(self.config, "init.kind") or "?")

    @property
    def history(self) -> list[dict]:
        h = self.metrics.get("history")
        return h if isinstance(h, list) else []

    def values(self) -> dict[str, float]:
        """Flat numeric values of the run (the keys of :data:`METRICS` that are known, and more)."""
        m, out = self.metrics, {}
        for k, v in (m.get("signal") or {}).items():
            out[k] = v
        for k, v in (m.get("truth") or {}).items():
            out[k] = v
        final = m.get("final") or {}
        if "total" in final:
            out["objective"] = final["total"]
        if "wall_time_s" in m:
            out["wall_s"] = m["wall_time_s"]
            out["compute_s"] = m["wall_time_s"] + self.source_s
        init = m.get("init") or {}
        out["init_s"] = init.get("seconds", 0.0) if isinstance(init, dict) else 0.0
        if "steps" in m:
            out["steps"] = m["steps"]
        if "code_ac_acc" in out and out.get("compute_s"):
            out["ac_gain_per_s"] = (out["code_ac_acc"] - AC_CHANCE) / out["compute_s"]
        return {k: float(v) for k, v in out.items() if _is_num(v)}


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _get(d: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


def _load_yaml(p: Path) -> Any:
    import yaml

    return yaml.safe_load(p.read_text())


def load_run(path: str | Path) -> Run:
    """A run directory → :class:`Run` (raises :class:`ReportError` on an unreadable metrics.json)."""
    path = Path(path)
    if not (path / rundir.METRICS).is_file():
        raise ReportError(f"{path}: no {rundir.METRICS} (not a finished run)")
    try:
        metrics = rundir.read_metrics(path)
    except rundir.RunDirError as e:
        raise ReportError(f"{e} (or re-run that run)") from e
    run = Run(path=path, metrics=metrics)
    ov = path / rundir.OVERRIDES
    if ov.is_file():
        run.overrides = [str(o) for o in (_load_yaml(ov) or [])]
        run.has_overrides = True
    for name in (rundir.CONFIG, rundir.HYDRA_CONFIG):
        if (path / name).is_file():
            try:
                run.config = _load_yaml(path / name) or {}
            except Exception:  # an unresolvable config only costs --group-by and warm-start accounting
                run.config = {}
            break
    run.source_s = _source_seconds(run.config, path)
    return run


def _source_seconds(config: dict, path: Path, depth: int = 0) -> float:
    """Wall time of the warm-start chain behind a run (0 unless ``init.kind == warm_start`` from a run dir)."""
    if depth > 4 or _get(config, "init.kind") != "warm_start" or not _get(config, "init.source"):
        return 0.0
    src = Path(str(_get(config, "init.source")))
    for cand in [src] if src.is_absolute() else [Path.cwd() / src, path / src]:
        if (cand / rundir.METRICS).is_file():
            try:
                m = rundir.read_metrics(cand)
                cfg = _load_yaml(cand / rundir.CONFIG) if (cand / rundir.CONFIG).is_file() else {}
            except Exception:
                return 0.0
            return float(m.get("wall_time_s", 0.0)) + _source_seconds(cfg or {}, cand, depth + 1)
    return 0.0


def find_runs(roots: Iterable[str | Path], quiet: bool = False) -> list[Run]:
    """Every run directory (holding ``metrics.json``) at or under ``roots``, in path order."""
    runs: list[Run] = []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise ReportError(f"{root}: no such directory (pass a Hydra multirun dir or a run dir)")
        files = [root / rundir.METRICS] if (root / rundir.METRICS).is_file() else sorted(root.rglob(rundir.METRICS))
        for f in files:
            if any(p in (rundir.CHECKPOINTS, "wandb") for p in f.parent.relative_to(root).parts):
                continue
            try:
                runs.append(load_run(f.parent))
            except ReportError as e:
                if not quiet:
                    print(f"voxinv.report: skipped {e}", file=sys.stderr)
    return runs


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
    return [_split(o) for o in run.overrides if _split(o)[0] not in SEED_KEYS and not o.startswith("hydra.")]


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
        varying = [k for k in all_keys if k not in DIFF_IGNORE and len({f.get(k, "<unset>") for f in flat}) > 1]
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


# -------------------------------------------------------------------------------- aggregation


def random_reference(runs: Iterable[Run]) -> dict[str, float]:
    """Per target name: mean step-0 SI-SDR of random-init runs (the SI-SDR of random codes)."""
    acc: dict[str, list[float]] = {}
    for r in runs:
        h = r.history
        if r.init_kind == "random" and h and h[0].get("step") == 0 and _is_num(h[0].get("si_sdr")):
            acc.setdefault(r.target, []).append(float(h[0]["si_sdr"]))
    return {t: float(np.mean(v)) for t, v in acc.items()}


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
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def run_values(run: Run, reference: dict[str, float] | None = None) -> dict[str, float]:
    """:meth:`Run.values` plus ``si_sdr_gain_per_s`` when the target's random-codes SI-SDR is known."""
    v = run.values()
    ref = (reference or {}).get(run.target)
    if ref is not None and "si_sdr" in v and v.get("compute_s"):
        v["si_sdr_gain_per_s"] = (v["si_sdr"] - ref) / v["compute_s"]
    return v


def aggregate(groups: dict[str, list[Run]], reference: dict[str, float] | None = None) -> list[GroupStats]:
    """Mean ± sample std over each group's runs of every numeric value (NaN/inf-free values only)."""
    out = []
    for label, runs in groups.items():
        vals = [run_values(r, reference) for r in runs]
        keys = list(dict.fromkeys(k for v in vals for k in v))
        mean, std, count = {}, {}, {}
        for k in keys:
            xs = [v[k] for v in vals if k in v and math.isfinite(v[k])]
            if xs:
                mean[k], std[k] = mean_std(xs)
                count[k] = len(xs)
        out.append(GroupStats(label, list(runs), mean, std, count))
    return out


def sort_stats(stats: Sequence[GroupStats], sort_by: str = "si_sdr") -> list[GroupStats]:
    """Best first by ``sort_by`` (direction from :data:`METRICS`, higher first when unknown); missing last."""
    hb = METRIC[sort_by].higher_better if sort_by in METRIC else True

    def key(s: GroupStats) -> tuple[int, float]:
        v = s.mean.get(sort_by)
        if v is None or math.isnan(v):
            return (1, 0.0)
        return (0, -v if hb else v)

    return sorted(stats, key=key)


def ceiling_rows(runs: Sequence[Run]) -> list[dict]:
    """Reference rows: the oracle in-gamut ceiling (codes known) and/or the best run found (real targets)."""
    rows = []
    if any(r.oracle for r in runs):
        rows.append(
            {
                "label": "ceiling: the true codes' own decode (oracle, in-gamut)",
                "values": {"si_sdr": math.inf, "mel": 0.0, "mrstft": 0.0, "code_sem_acc": 100.0, "code_ac_acc": 100.0},
                "note": "the target IS the decode of the true codes: reconstruction identical, SI-SDR = ∞ "
                "(the metric saturates at ≈ +200 dB numerically), mel = MRSTFT = 0, 100 % codes",
            }
        )
    real = [r for r in runs if not r.oracle]
    if real:
        best: dict[str, float] = {}
        for r in real:
            for k, v in r.values().items():
                if k in ("si_sdr", "mel", "mrstft") and math.isfinite(v):
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


# ----------------------------------------------------------------------------------- markdown


def _cell(s: GroupStats, k: str) -> str:
    if k not in s.mean:
        return "–"
    f = METRIC[k].fmt
    m, sd = s.mean[k], s.std[k]
    txt = f"{f.format(m)} ± {f.format(sd)}" if s.count[k] > 1 else f.format(m)
    return txt + (f" (n={s.count[k]})" if s.count[k] != s.n else "")


def _ceil_cell(v: float | None, k: str) -> str:
    if v is None:
        return ""
    if math.isinf(v):
        return "∞"
    return METRIC[k].fmt.format(v)


def markdown_table(
    stats: Sequence[GroupStats],
    sort_by: str = "si_sdr",
    metrics: Sequence[str] | None = None,
    ceilings: Sequence[dict] = (),
) -> str:
    """A markdown table: one row per configuration (best first by ``sort_by``), then ceiling rows.

    Cells are ``mean ± std`` over the group's runs (``(n=k)`` when only k runs have the value);
    columns no group has are dropped.
    """
    keys = [k for k in (metrics or [m.key for m in METRICS]) if any(k in s.mean for s in stats)]
    arrow = {True: " ↑", False: " ↓"}  # which way is better
    head = ["config", "n"] + [
        (f"**{METRIC[k].header}**" if k == sort_by else METRIC[k].header) + arrow[METRIC[k].higher_better] for k in keys
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for s in sort_stats(stats, sort_by):
        lines.append("| " + " | ".join([f"`{s.label}`", str(s.n)] + [_cell(s, k) for k in keys]) + " |")
    for c in ceilings:
        cells = [_ceil_cell(c["values"].get(k), k) for k in keys]
        lines.append("| " + " | ".join([f"*{c['label']}*", ""] + cells) + " |")
    return "\n".join(lines)


def winners(stats: Sequence[GroupStats], keys: Sequence[str] = HEADLINE) -> dict[str, tuple[str, float]]:
    """``{metric: (label, mean)}`` of the best configuration per metric (by mean); ties joined by " = "."""
    out = {}
    for k in keys:
        have = [s for s in stats if k in s.mean]
        if have:
            best = sort_stats(have, k)[0].mean[k]
            tied = [s.label for s in have if math.isclose(s.mean[k], best, rel_tol=1e-9, abs_tol=1e-9)]
            out[k] = (" = ".join(tied), best)
    return out


def per_run_table(stats: Sequence[GroupStats], reference: dict[str, float] | None = None) -> str:
    keys = ("si_sdr", "mel", "code_sem_acc", "code_ac_acc", "wall_s", "compute_s")
    lines = ["| config | seed | run | " + " | ".join(METRIC[k].header for k in keys) + " |"]
    lines.append("|" + "|".join(["---"] * 3 + ["--:"] * len(keys)) + "|")
    for s in stats:
        for r in s.runs:
            v = run_values(r, reference)
            cells = [METRIC[k].fmt.format(v[k]) if k in v else "–" for k in keys]
            lines.append(f"| `{s.label}` | {r.seed} | {r.path.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


PAIRED_KEYS = ("si_sdr", "mel", "code_sem_acc", "code_ac_acc", "compute_s")


def paired_differences(
    groups: dict[str, list[Run]],
    baseline: str,
    reference: dict[str, float] | None = None,
    keys: Sequence[str] = PAIRED_KEYS,
) -> list[dict]:
    """Per-target differences of each group against the ``baseline`` group (same targets = same seeds).

    Returns ``[{"label", "n", "mean": {k}, "std": {k}, "better": {k}}]``: mean ± sample std over the
    targets both groups ran on of (group − baseline), and on how many of them the group is better
    (direction from :data:`METRICS`). Runs sharing a target within a group are averaged first.
    """
    if baseline not in groups:
        raise ReportError(f"--baseline {baseline!r} is not a configuration here: choose from {list(groups)}")

    def by_target(runs: Sequence[Run]) -> dict[str, dict[str, float]]:
        acc: dict[str, list[dict[str, float]]] = {}
        for r in runs:
            acc.setdefault(r.target, []).append(run_values(r, reference))
        return {
            t: {k: float(np.mean([v[k] for v in vs if k in v])) for k in keys if any(k in v for v in vs)}
            for t, vs in acc.items()
        }

    base = by_target(groups[baseline])
    out = []
    for label, runs in groups.items():
        if label == baseline:
            continue
        mine = by_target(runs)
        common = [t for t in mine if t in base]
        row: dict = {"label": label, "n": len(common), "mean": {}, "std": {}, "better": {}}
        for k in keys:
            d = [mine[t][k] - base[t][k] for t in common if k in mine[t] and k in base[t]]
            if d:
                row["mean"][k], row["std"][k] = mean_std(d)
                hb = METRIC[k].higher_better
                row["better"][k] = sum(1 for x in d if (x > 1e-9 if hb else x < -1e-9))
        out.append(row)
    return out


def paired_table(rows: Sequence[dict], baseline: str, keys: Sequence[str] = PAIRED_KEYS) -> str:
    """Markdown for :func:`paired_differences`: ``Δ mean ± std (better on k/n targets)``."""
    keys = [k for k in keys if any(k in r["mean"] for r in rows)]
    head = [f"config − `{baseline}`", "pairs"] + [f"Δ {METRIC[k].header}" for k in keys]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|"]
    for r in rows:
        cells = []
        for k in keys:
            f = METRIC[k].fmt
            signed = f.replace("{:", "{:+")
            cells.append(
                f"{signed.format(r['mean'][k])} ± {f.format(r['std'][k])} ({r['better'][k]}/{r['n']})"
                if k in r["mean"]
                else "–"
            )
        lines.append("| " + " | ".join([f"`{r['label']}`", str(r["n"])] + cells) + " |")
    return "\n".join(lines)


def _rel(p: Path) -> str:
    """``p`` relative to the working directory when inside it, else absolute."""
    p = p.resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


# -------------------------------------------------------------------------------------- plots


def _plt():
    import matplotlib.pyplot as plt  # the backend is the caller's (MPLBACKEND, a notebook's inline, …)

    return plt


def _curve(runs: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps, mean and std over runs of ``history[*][key]`` (steps any run logged)."""
    by_step: dict[int, list[float]] = {}
    for r in runs:
        for h in r.history:
            if _is_num(h.get(key)) and _is_num(h.get("step")) and math.isfinite(h[key]):
                by_step.setdefault(int(h["step"]), []).append(float(h[key]))
    if not by_step:
        return None
    steps = np.array(sorted(by_step))
    ms = np.array([mean_std(by_step[s]) for s in steps])
    return steps, ms[:, 0], ms[:, 1]


def plot_curves(
    stats: Sequence[GroupStats], path: str | Path, keys: Sequence[str] = CURVE_METRICS, title: str = ""
) -> Path | None:
    """Metric-vs-step curves per configuration (mean over seeds, ±1 std band) → PNG; None if no history.

    The history holds the codes at each evaluation step; the exported codes are the best of those by
    the objective, so the table can beat the last point of a curve.
    """
    keys = [k for k in keys if any(_curve(s.runs, k) is not None for s in stats)]
    if not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.6), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, k in zip(axes[0], keys):
        for i, s in enumerate(stats):
            c = _curve(s.runs, k)
            if c is None:
                continue
            x, m, sd = c
            col = colors[i % len(colors)]
            ax.plot(x, m, label=s.label, color=col, lw=1.5, ls="-" if i < len(colors) else "--")
            lo, hi = m - sd, m + sd
            if k.endswith("_acc"):  # percentages: keep the band inside [0, 100]
                lo, hi = np.clip(lo, 0, 100), np.clip(hi, 0, 100)
            if k in LOG_METRICS:  # log axis: a band reaching 0 would fill the whole plot
                lo = np.maximum(lo, m / 3)
            ax.fill_between(x, lo, hi, color=col, alpha=0.15 if len(stats) <= 4 else 0.07, lw=0)
        ax.set_xlabel("step")
        ax.set_ylabel((METRIC[k].header if k in METRIC else k) + " (codes at step)")
        if k in LOG_METRICS:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    fig.suptitle(title or "", fontsize=10)
    fig.tight_layout()
    return _save_png(fig, path, dpi=80)


def plot_code_accuracy(stats: Sequence[GroupStats], path: str | Path, title: str = "") -> Path | None:
    """Semantic and acoustic code accuracy vs step per configuration (oracle targets) → PNG."""
    return plot_curves(stats, path, CODE_CURVE_METRICS, title)


def _spec_db(wav, n_fft: int = 512, hop: int = 256) -> np.ndarray:
    import torch

    w = torch.as_tensor(wav).float().reshape(-1)
    s = torch.stft(w, n_fft, hop, window=torch.hann_window(n_fft), return_complex=True).abs()
    return (20 * torch.log10(s + 1e-6)).numpy()  # [freq, frames]


def _save_png(fig, path: str | Path, dpi: int = 80) -> Path:
    """Save ``fig`` as a 256-colour palette PNG (a few times smaller than RGBA; reports are committed)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    _plt().close(fig)
    buf.seek(0)
    path = Path(path)
    Image.open(buf).convert("RGB").quantize(256).save(path, optimize=True)
    return path


def plot_spectrograms(
    stats: Sequence[GroupStats], path: str | Path, sort_by: str = "si_sdr", sr: int = 24000, title: str = ""
) -> Path | None:
    """Target + each configuration's reconstruction of it (left, one colour scale) and the difference
    reconstruction − target in dB (right) → PNG; None when no run has audio.

    The target is that of the best run overall (by ``sort_by``); each row shows the configuration's
    best run on that target (its own best target, labelled, if it has none on it).
    """
    from voxinv.audio import read_audio

    def best_run(runs: Sequence[Run]) -> Run | None:
        have = [r for r in runs if all((r.path / f).is_file() for f in rundir.AUDIO_FILES)]
        if not have:
            return None
        hb = METRIC[sort_by].higher_better if sort_by in METRIC else True
        return sorted(have, key=lambda r: -(r.values().get(sort_by, -math.inf) * (1 if hb else -1)))[0]

    ordered = sort_stats(stats, sort_by)
    top = best_run([r for s in ordered for r in s.runs])
    if top is None:
        return None
    tname = top.target
    target = _spec_db(read_audio(top.path / rundir.TARGET, sr))
    rows: list[tuple[str, np.ndarray, np.ndarray | None]] = [(f"target {tname}", target, None)]
    for s in ordered:
        r = best_run([r for r in s.runs if r.target == tname]) or best_run(s.runs)
        if r is None:
            continue
        v = r.values()
        extra = f" — SI-SDR {v['si_sdr']:.1f} dB" if "si_sdr" in v else ""
        extra += f", ac {v['code_ac_acc']:.0f} %" if "code_ac_acc" in v else ""
        other = "" if r.target == tname else f" [target {r.target}]"
        rec = _spec_db(read_audio(r.path / rundir.RECONSTRUCTION, sr))
        ref = target if r.target == tname else _spec_db(read_audio(r.path / rundir.TARGET, sr))
        n = min(rec.shape[1], ref.shape[1])
        rows.append((f"{s.label} (seed {r.seed}){extra}{other}", rec, rec[:, :n] - ref[:, :n]))
    vmax = max(float(s.max()) for _, s, _ in rows)
    seconds = target.shape[1] * 256 / sr
    ext = (0, seconds, 0, sr / 2000)
    plt = _plt()
    fig, axes = plt.subplots(
        len(rows), 2, figsize=(9, 0.4 + 1.1 * len(rows)), sharex=True, squeeze=False, layout="constrained"
    )
    im = None
    for (name, spec, diff), (ax, axd) in zip(rows, axes):
        ax.imshow(spec, origin="lower", aspect="auto", vmin=vmax - 80, vmax=vmax, extent=ext, interpolation="nearest")
        ax.set_title(name, fontsize=6.5, loc="left", pad=2)
        ax.set_ylabel("kHz", fontsize=6)
        for a in (ax, axd):
            a.tick_params(labelsize=5.5)
        if diff is None:
            axd.axis("off")
            axd.text(0.0, 0.5, "right: reconstruction − target, dB\n(white = equal, ±20 dB clipped)", fontsize=7)
            continue
        im = axd.imshow(
            diff, origin="lower", aspect="auto", cmap="RdBu_r", vmin=-20, vmax=20, extent=ext, interpolation="nearest"
        )
    axes[-1, 0].set_xlabel("s", fontsize=6)
    axes[-1, 1].set_xlabel("s", fontsize=6)
    if im is not None:
        fig.colorbar(im, ax=axes[:, 1].tolist(), fraction=0.04, pad=0.01, aspect=30).ax.tick_params(labelsize=5.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save_png(fig, path, dpi=72)


# ---------------------------------------------------------------------------------------- W&B


def wandb_runs(project: str, group: str | None = None, limit: int = 500) -> list[Run]:
    """Runs of a W&B project (``[entity/]project``) as :class:`Run` objects, from their summaries and
    logged ``eval/*`` history (no audio: no spectrograms). Raises :class:`WandbUnavailable` when offline
    or not logged in."""
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        raise WandbUnavailable(f"WANDB_MODE={os.environ['WANDB_MODE']}")
    try:
        import wandb
    except ImportError as e:
        raise WandbUnavailable("wandb is not installed (pip install wandb)") from e
    try:
        key = os.environ.get("WANDB_API_KEY") or wandb.api.api_key
    except Exception:
        key = None
    if not key:
        raise WandbUnavailable("not logged in (run `wandb login` or set WANDB_API_KEY)")
    try:
        api = wandb.Api(timeout=20)
        found = list(api.runs(project, filters={"group": group} if group else None, per_page=min(limit, 100)))
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WandbUnavailable(f"cannot query W&B project {project!r}: {msg}") from e
    keys = ["eval/objective", "eval/si_sdr", "eval/mel", "eval/code_sem_acc", "eval/code_ac_acc", "trainer/global_step"]
    runs = []
    for wr in found[:limit]:
        s = dict(wr.summary)
        ev = {k.split("/", 1)[1]: v for k, v in s.items() if k.startswith("eval/") and _is_num(v)}
        history = []
        for row in wr.scan_history(keys=[k for k in keys if k != "trainer/global_step"]):
            step = row.get("trainer/global_step", row.get("_step"))
            history.append({"step": step, **{k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("eval/")}})
        metrics: dict[str, Any] = {
            "signal": {k: ev[k] for k in ("si_sdr", "mel") if k in ev},
            "final": {"total": ev["objective"]} if "objective" in ev else {},
            "wall_time_s": s.get("_runtime"),
            "seed": wr.config.get("seed"),
            "history": history,
            "target": {"name": _get(wr.config, "target.kind") or "?"},
            "init": {"kind": _get(wr.config, "init.kind")},
        }
        truth = {k: v for k, v in ev.items() if k.startswith("code_")}
        if truth:
            metrics["truth"] = truth
        runs.append(
            Run(
                path=Path(f"wandb/{wr.path[-1] if isinstance(wr.path, list) else wr.id}"),
                metrics=metrics,
                config=dict(wr.config),
            )
        )
    return runs


# ------------------------------------------------------------------------------------- report


def build_report(
    runs: Sequence[Run],
    out: str | Path,
    *,
    group_by: Sequence[str] | None = None,
    sort_by: str = "si_sdr",
    title: str | None = None,
    reference_runs: Sequence[Run] = (),
    sources: Sequence[str] = (),
    plots: bool = True,
    baseline: str | None = None,
) -> dict:
    """Write report.md, summary.json and the PNG plots for ``runs`` into ``out``; returns the summary.

    ``baseline``: a configuration label; adds per-target (paired) differences of every other
    configuration against it.
    """
    if not runs:
        raise ReportError(f"no runs to report (no {rundir.METRICS} found)")
    if sort_by not in METRIC:
        raise ReportError(f"--sort {sort_by!r}: choose from {', '.join(METRIC)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups, common = group_runs(runs, group_by)
    reference = random_reference(list(runs) + list(reference_runs))
    stats = aggregate(groups, reference)
    ceilings = ceiling_rows(runs)
    paired = paired_differences(groups, baseline, reference) if baseline else []
    title = title or (Path(sources[0]).name if sources else "sweep")

    figs: dict[str, str] = {}
    if plots:
        for name, fn in (
            ("curves", lambda p: plot_curves(stats, p, title=f"{title}: mean ± std over seeds")),
            ("code_acc", lambda p: plot_code_accuracy(stats, p, title=f"{title}: code accuracy vs step")),
            ("spectrograms", lambda p: plot_spectrograms(stats, p, sort_by, title=f"{title}: best reconstructions")),
        ):
            p = fn(out / f"{name}.png")
            if p is not None:
                figs[name] = p.name

    seeds = sorted({str(r.seed) for r in runs})
    targets = sorted({r.target for r in runs})
    md = [f"# {title}", ""]
    md.append(
        f"{len(runs)} runs in {len(groups)} configurations (seeds {', '.join(seeds)}; "
        f"{len(targets)} target(s): {', '.join(targets[:6])}{' …' if len(targets) > 6 else ''})"
        + (f" from {', '.join(f'`{s}`' for s in sources)}" if sources else "")
        + "."
    )
    grouping = f"`--group-by {','.join(group_by)}`" if group_by else "Hydra overrides minus `seed`"
    md.append(f"Grouped by {grouping}; shared by all runs: {', '.join(f'`{c}`' for c in common) or '—'}.")
    md += ["", f"Mean ± sample std over runs (seeds), sorted by {METRIC[sort_by].header}.", ""]
    table = markdown_table(stats, sort_by, ceilings=ceilings)
    md.append(table)
    md.append("")
    w = winners(stats)
    if w:
        md.append(
            "**Best mean per metric:** "
            + "; ".join(f"{METRIC[k].header}: `{lab}` ({METRIC[k].fmt.format(v)})" for k, (lab, v) in w.items())
            + "."
        )
        md.append("")
    md.append(
        "Columns: " + "; ".join(f"**{m.header}** {m.doc}" for m in METRICS if any(m.key in s.mean for s in stats)) + "."
    )
    if any("si_sdr" in s.mean for s in stats) and not any("si_sdr_gain_per_s" in s.mean for s in stats):
        md.append(
            "ΔSI-SDR/s needs the random-codes SI-SDR of the targets: pass a sweep with `init=random` runs via `--reference`."
        )
    for c in ceilings:
        md.append(f"*{c['label']}*: {c['note']}.")
    md.append("")
    if paired:
        md += [
            f"Paired against `{baseline}` (same targets/seeds): mean ± std of the per-target difference, "
            "(k/n) = better on k of n targets.",
            "",
            paired_table(paired, baseline),
            "",
        ]
    for name, cap in (
        ("curves", "SI-SDR and mel vs step"),
        ("code_acc", "code accuracy vs step"),
        ("spectrograms", "target and best reconstruction per configuration"),
    ):
        if name in figs:
            md += [f"![{cap}]({figs[name]})", ""]
    md += ["<details><summary>Per-run values</summary>", "", per_run_table(stats, reference), "", "</details>", ""]
    rundir.atomic_write(out / "report.md", "\n".join(md))

    summary = {
        "title": title,
        "sources": list(sources),
        "sort_by": sort_by,
        "group_by": list(group_by) if group_by else None,
        "common": common,
        "random_codes_si_sdr": reference,
        "groups": [
            {
                "label": s.label,
                "n": s.n,
                "mean": s.mean,
                "std": s.std,
                "count": s.count,
                "runs": [_rel(r.path) for r in s.runs],
            }
            for s in sort_stats(stats, sort_by)
        ],
        "ceilings": [
            {**c, "values": {k: (None if math.isinf(v) else v) for k, v in c["values"].items()}} for c in ceilings
        ],
        "winners": {k: {"label": lab, "mean": v} for k, (lab, v) in w.items()},
        "baseline": baseline,
        "paired": paired,
        "figures": figs,
        "table": table,
    }
    rundir.write_json(out / "summary.json", summary, indent=1)
    return summary


def write_report(
    sweep_dirs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    group_by: Sequence[str] | None = None,
    sort_by: str = "si_sdr",
    title: str | None = None,
    references: Sequence[str | Path] = (),
    plots: bool = True,
    baseline: str | None = None,
) -> dict:
    """:func:`build_report` for the runs under ``sweep_dirs`` (default ``out``: ``<first dir>/report``)."""
    runs = find_runs(sweep_dirs)
    refs = find_runs(references, quiet=True) if references else []
    out = Path(out) if out is not None else Path(sweep_dirs[0]) / "report"
    return build_report(
        runs,
        out,
        group_by=group_by,
        sort_by=sort_by,
        title=title,
        reference_runs=refs,
        sources=[_rel(Path(d)) for d in sweep_dirs],
        plots=plots,
        baseline=baseline,
    )


# ---------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voxinv.report",
        description="Aggregate inversion sweeps (mean ± std over seeds) into report.md + PNG plots.",
    )
    ap.add_argument("sweeps", nargs="*", metavar="SWEEP_DIR", help="Hydra multirun dirs (or run dirs)")
    ap.add_argument("--out", type=Path, help="output directory (default: <first SWEEP_DIR>/report)")
    ap.add_argument("--group-by", help="comma-separated resolved-config keys, e.g. loss.weights,codes.semantic")
    ap.add_argument("--sort", default="si_sdr", help=f"table order: one of {', '.join(METRIC)} (default si_sdr)")
    ap.add_argument("--title", help="report title (default: the first sweep dir's name)")
    ap.add_argument(
        "--reference",
        action="append",
        default=[],
        metavar="DIR",
        help="extra sweep dirs whose random-init runs give random-codes SI-SDR (not tabulated)",
    )
    ap.add_argument("--baseline", metavar="LABEL", help="a configuration label: add paired differences against it")
    ap.add_argument("--wandb", metavar="PROJECT", help="also pull runs from W&B ([entity/]project) when online")
    ap.add_argument("--wandb-group", help="only W&B runs of this group")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    if not args.sweeps and not args.wandb:
        ap.error("give at least one SWEEP_DIR (or --wandb PROJECT)")
    group_by = [k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by else None
    try:
        runs = find_runs(args.sweeps)
        if args.wandb:
            try:
                runs += wandb_runs(args.wandb, args.wandb_group)
            except WandbUnavailable as e:
                print(f"voxinv.report: W&B skipped: {e}", file=sys.stderr)
        if not runs:
            raise ReportError(f"no runs (metrics.json) under {', '.join(args.sweeps) or 'W&B'}: finish a sweep first")
        refs = find_runs(args.reference, quiet=True) if args.reference else []
        out = args.out or (Path(args.sweeps[0]) / "report" if args.sweeps else Path("report"))
        summary = build_report(
            runs,
            out,
            group_by=group_by,
            sort_by=args.sort,
            title=args.title,
            reference_runs=refs,
            sources=[_rel(Path(d)) for d in args.sweeps] + ([f"wandb:{args.wandb}"] if args.wandb else []),
            plots=not args.no_plots,
            baseline=args.baseline,
        )
    except ReportError as e:
        print(f"voxinv.report: error: {e}", file=sys.stderr)
        return 2
    print(
        f"{out / 'report.md'}: {sum(g['n'] for g in summary['groups'])} runs, {len(summary['groups'])} configurations"
    )
    print(summary["table"])
    return 0
