"""Sweep reports (``python -m voxinv.report``): runs → configurations → mean ± std tables, plots, summary.

Modules: :mod:`.runs` (discovery, a run's values), :mod:`.stats` (grouping, statistics over seeds,
paired differences, ceilings), :mod:`.tables` (markdown), :mod:`.plots` (PNG figures),
:mod:`.wandb_source` (W&B runs), :mod:`.cli` (the report itself and its command line).
:mod:`.bench` (benchmark logs: ``runs.jsonl``). Headers, formats, directions and the tables' columns come from the
metric registry, :mod:`voxinv.eval.formats`.
"""

from voxinv.eval.formats import AC_CHANCE, AC_LEVELS, METRIC, METRICS, SEM_CHANCE, SEM_ENTRIES, Metric
from voxinv.eval.report.cli import build_report, main, write_report
from voxinv.eval.report.plots import (
    CODE_CURVE_METRICS,
    CURVE_METRICS,
    DPI,
    LOG_METRICS,
    curves_figure,
    plot_code_accuracy,
    plot_curves,
    plot_spectrograms,
    spectrogram_figure,
)
from voxinv.eval.report.runs import ReportError, Run, find_runs, load_run
from voxinv.eval.report.stats import (
    HEADLINE,
    PAIRED_KEYS,
    GroupStats,
    aggregate,
    ceiling_rows,
    group_runs,
    mean_std,
    paired_differences,
    paired_frame,
    random_reference,
    run_key,
    run_values,
    sort_stats,
    values_frame,
    winners,
)
from voxinv.eval.report.tables import markdown_table, paired_table, per_run_table
from voxinv.eval.report.wandb_source import WandbUnavailable, wandb_runs

__all__ = [
    "AC_CHANCE",
    "AC_LEVELS",
    "CODE_CURVE_METRICS",
    "CURVE_METRICS",
    "DPI",
    "HEADLINE",
    "LOG_METRICS",
    "METRIC",
    "METRICS",
    "PAIRED_KEYS",
    "SEM_CHANCE",
    "SEM_ENTRIES",
    "GroupStats",
    "Metric",
    "ReportError",
    "Run",
    "WandbUnavailable",
    "aggregate",
    "build_report",
    "curves_figure",
    "ceiling_rows",
    "find_runs",
    "group_runs",
    "load_run",
    "main",
    "markdown_table",
    "mean_std",
    "paired_differences",
    "paired_frame",
    "paired_table",
    "per_run_table",
    "plot_code_accuracy",
    "plot_curves",
    "plot_spectrograms",
    "random_reference",
    "run_key",
    "run_values",
    "sort_stats",
    "spectrogram_figure",
    "values_frame",
    "wandb_runs",
    "winners",
    "write_report",
]
