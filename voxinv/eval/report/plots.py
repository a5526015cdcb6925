"""Report figures (curves, code accuracy, spectrograms): the style and the spectrogram figure are
:mod:`voxinv.figures`' (shared with the run's W&B media); which metric is plotted how is the metric
registry's (:mod:`voxinv.eval.formats`: the ``curves`` / ``code_curves`` views, ``chance``, ``log_scale``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxinv import rundir
from voxinv.audio import read_audio
from voxinv.eval.formats import METRIC, chance, columns, higher_better
from voxinv.eval.report.runs import Run, _is_num
from voxinv.eval.report.stats import GroupStats, sort_stats
from voxinv.figures import DIFF_DB, DPI, FONT, SPEC_FLOOR_DB, STYLE, spectrogram_grid
from voxinv.figures import figure as _figure
from voxinv.figures import save_png as _save_png

__all__ = ["DIFF_DB", "DPI", "FONT", "SPEC_FLOOR_DB", "STYLE", "_figure", "_save_png"]  # re-exported
# import-time snapshots of the registry's views (the figures read the registry when drawn)
CURVE_METRICS = columns("curves")
CODE_CURVE_METRICS = columns("code_curves")
LOG_METRICS = tuple(k for k, m in METRIC.items() if m.log_scale)


def _curve(runs: Sequence[Run], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Steps, mean and sample std (0 for one run) over runs of ``history[*][key]`` (steps any run logged)."""
    pts = [
        (int(h["step"]), float(h[key]))
        for r in runs
        for h in r.history
        if _is_num(h.get(key)) and _is_num(h.get("step")) and math.isfinite(h[key])
    ]
    if not pts:
        return None
    g = pd.DataFrame(pts, columns=["step", "v"]).groupby("step")["v"]  # sorted by step
    m, sd = g.mean(), g.std(ddof=1).fillna(0.0)
    return m.index.to_numpy(), m.to_numpy(), sd.to_numpy()


def curves_figure(stats: Sequence[GroupStats], keys: Sequence[str] | None = None, title: str = ""):
    """Metric-vs-step curves per configuration (mean over seeds, ±1 std band); None if no history.

    The history holds the codes at each evaluation step; the exported codes are the best of those by
    the objective, so the table can beat the last point of a curve. Code accuracies get their chance
    level as a dashed line. ``keys`` default: the registry's ``curves`` view.
    """
    keys = [
        k for k in (columns("curves") if keys is None else keys) if any(_curve(s.runs, k) is not None for s in stats)
    ]
    if not keys:
        return None
    import matplotlib

    chances = chance()
    log_axis = {k for k in keys if k in METRIC and METRIC[k].log_scale}
    fig = _figure(figsize=(5.5 * len(keys), 4.2))
    with matplotlib.rc_context(STYLE):
        axes = fig.subplots(1, len(keys), squeeze=False)[0]
        colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, k in zip(axes, keys):
            for i, s in enumerate(stats):
                c = _curve(s.runs, k)
                if c is None:
                    continue
                x, m, sd = c
                col = colors[i % len(colors)]
                ax.plot(x, m, label=s.label, color=col, lw=1.8, ls="-" if i < len(colors) else "--", marker=".")
                lo, hi = m - sd, m + sd
                if k.endswith("_acc"):  # percentages: keep the band inside [0, 100]
                    lo, hi = np.clip(lo, 0, 100), np.clip(hi, 0, 100)
                if k in log_axis:  # log axis: a band reaching 0 would fill the whole plot
                    lo = np.maximum(lo, m / 3)
                ax.fill_between(x, lo, hi, color=col, alpha=0.15 if len(stats) <= 4 else 0.07, lw=0)
            if k in chances:
                ax.axhline(chances[k], color="0.35", ls=":", lw=1.5, label=f"chance {chances[k]:.2g} %")
                ax.set_ylim(-3, 103)
            ax.set_xlabel("step")
            ax.set_ylabel((METRIC[k].header if k in METRIC else k) + " (codes at step)")
            if k in log_axis:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
            ax.legend(loc="best")
        if title:
            fig.suptitle(title)
    return fig


def plot_curves(
    stats: Sequence[GroupStats], path: str | Path, keys: Sequence[str] | None = None, title: str = ""
) -> Path | None:
    """:func:`curves_figure` → PNG; None if no history."""
    fig = curves_figure(stats, keys, title)
    return None if fig is None else _save_png(fig, path)


def plot_code_accuracy(stats: Sequence[GroupStats], path: str | Path, title: str = "") -> Path | None:
    """Semantic and acoustic code accuracy vs step per configuration (oracle targets) → PNG."""
    return plot_curves(stats, path, columns("code_curves"), title)


HOP = 256  # the report's spectrogram hop (samples)


def _spec_db(wav, n_fft: int = 512, hop: int = HOP) -> np.ndarray:
    from voxinv.dsp import spectrogram_db

    return spectrogram_db(wav, n_fft, hop).numpy()  # [freq, frames]


def spectrogram_figure(stats: Sequence[GroupStats], sort_by: str = "si_sdr", sr: int = 24000, title: str = ""):
    """Target + each configuration's reconstruction of it (left, one dB colour scale) and the difference
    reconstruction − target in dB (right, ± 20 dB); None when no run has audio.

    The target is that of the best run overall (by ``sort_by``); each row shows the configuration's
    best run on that target (its own best target, labelled, if it has none on it).
    """

    def best_run(runs: Sequence[Run]) -> Run | None:
        have = [r for r in runs if all((r.path / f).is_file() for f in rundir.AUDIO_FILES)]
        if not have:
            return None
        hb = higher_better(sort_by)
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
    return spectrogram_grid(rows, sr, HOP, title)


def plot_spectrograms(
    stats: Sequence[GroupStats], path: str | Path, sort_by: str = "si_sdr", sr: int = 24000, title: str = ""
) -> Path | None:
    """:func:`spectrogram_figure` → PNG; None when no run has audio."""
    fig = spectrogram_figure(stats, sort_by, sr, title)
    return None if fig is None else _save_png(fig, path)
