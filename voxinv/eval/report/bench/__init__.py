"""Benchmark logs (one JSON line per run, e.g. ``experiments/results/speech``) → report.md, summary.json,
curves.png: ``python -m voxinv.report experiments/results/speech``.

A benchmark log directory holds ``runs.jsonl`` (per run: ``variant``, ``tier``, ``clip``, ``seed``, the
scores, ``wall_s`` and ``curve`` = the evaluations as ``[wall s, mrmel, objective, evaluation s so far,
step, process CPU s, evaluation CPU s so far]``; older rows lack the last two or four) and
``references.jsonl`` (per clip: the encoder's own codes decoded, ``variant: encoder``, and a second
recording of the same speaker, ``variant: same_speaker``, where one exists: the speaker-similarity
ceiling), optionally ``graders.jsonl`` (independent graders scored after the runs, merged into the runs by
(variant, clip, seed) and into the references by (variant, clip): ``spk_ge2e``, ``spk_dvec``, ``wer``,
``cer``, ``dnsmos_*``, and per clip an ``original`` row: the target's transcript, DNSMOS and the whole
recording's WER against its transcript, ``wer_full``) and optionally ``report.json`` (the benchmark's report settings: ``baseline`` and ``recipe``, each
a variant or {tier: variant}, ``plot``, ``notes``, ``encoder_seen``; arguments given to :func:`bench_report`
win). Statistics are the sweep report's
(:func:`~voxinv.eval.report.stats.mean_std`, :func:`~voxinv.eval.report.stats.paired_frame`).

Modules: :mod:`.log` (the log's files, loading, the held-out rule), :mod:`.curves` (time to a quality,
speed-ups, wins, the early stop replayed), :mod:`.graders` and :mod:`.budget` (their sections),
:mod:`.render` (the report). Scores, headers and directions: the metric registry
(:mod:`voxinv.eval.formats`, the ``bench`` views).
"""

from voxinv.eval.report.bench.budget import budget_table
from voxinv.eval.report.bench.curves import _opt_curve, early_stop_replay, speedups, time_to
from voxinv.eval.report.bench.log import (
    GRADERS,
    REFS,
    RUNS,
    SETTINGS,
    WER_GOAL_MAX,
    held_out,
    is_bench_log,
    load,
    run_cpu_s,
    self_graded,
)
from voxinv.eval.report.bench.render import bench_report

__all__ = [
    "GRADERS",
    "REFS",
    "RUNS",
    "SETTINGS",
    "WER_GOAL_MAX",
    "_opt_curve",
    "bench_report",
    "budget_table",
    "early_stop_replay",
    "held_out",
    "is_bench_log",
    "load",
    "run_cpu_s",
    "self_graded",
    "speedups",
    "time_to",
]
