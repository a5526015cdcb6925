"""Sweep reports: ``python -m voxinv.report SWEEP_DIR [SWEEP_DIR …] [--out DIR] [--group-by KEYS]``.

One directory holding a benchmark log (``runs.jsonl``, e.g. ``experiments/results/speech``) gets the
benchmark report of :mod:`~voxinv.eval.report.bench` instead (per-clip table, means ± std, paired
differences, time to ``--recipe``'s quality, quality-vs-time curves).

The report is assembled here from :mod:`~voxinv.eval.report.runs` (discovery),
:mod:`~voxinv.eval.report.stats` (grouping, statistics), :mod:`~voxinv.eval.report.tables`,
:mod:`~voxinv.eval.report.plots` and :mod:`~voxinv.eval.report.wandb_source`.

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
import sys
from collections.abc import Sequence
from pathlib import Path

from voxinv import rundir
from voxinv.eval.formats import METRIC, columns
from voxinv.eval.report.bench import bench_report, is_bench_log
from voxinv.eval.report.plots import plot_code_accuracy, plot_curves, plot_spectrograms
from voxinv.eval.report.runs import ReportError, Run, find_runs
from voxinv.eval.report.stats import (
    aggregate,
    ceiling_rows,
    group_runs,
    paired_differences,
    random_reference,
    sort_stats,
    winners,
)
from voxinv.eval.report.tables import markdown_table, paired_table, per_run_table
from voxinv.eval.report.wandb_source import WandbUnavailable, wandb_runs


def _rel(p: Path) -> str:
    """``p`` relative to the working directory when inside it, else absolute."""
    p = p.resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


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
    # interrupted runs (a signal, a non-finite loss) are listed apart, not pooled with finished ones;
    # runs that stopped by their own rules (early stop, max_time) are pooled and flagged
    apart = [r for r in runs if r.interrupted]
    flagged = [r for r in runs if not r.interrupted and r.incomplete]
    runs = [r for r in runs if not r.interrupted]
    if not runs:
        raise ReportError(
            f"all {len(apart)} runs were interrupted ({apart[0].path}: {apart[0].incomplete}); resume them"
        )
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
    if flagged:
        md.append(
            f"**{len(flagged)} of {len(runs)} runs stopped before their configured steps** and are pooled "
            "with the others: " + "; ".join(f"`{_rel(r.path)}` ({r.incomplete}, `{r.label}`)" for r in flagged) + "."
        )
    if apart:
        md.append(
            f"**{len(apart)} interrupted run(s) left out** (resume them with `resume=true`): "
            + "; ".join(f"`{_rel(r.path)}` ({r.incomplete})" for r in apart)
            + "."
        )
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
        "Columns: "
        + "; ".join(
            f"**{METRIC[k].header}** {METRIC[k].doc}" for k in columns("report") if any(k in s.mean for s in stats)
        )
        + "."
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
                "incomplete": {_rel(r.path): r.incomplete for r in s.runs if r.incomplete},
            }
            for s in sort_stats(stats, sort_by)
        ],
        "ceilings": [
            {**c, "values": {k: (None if math.isinf(v) else v) for k, v in c["values"].items()}} for c in ceilings
        ],
        "winners": {k: {"label": lab, "mean": v} for k, (lab, v) in w.items()},
        "baseline": baseline,
        "interrupted": {_rel(r.path): r.incomplete for r in apart},
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m voxinv.report",
        description="Aggregate inversion sweeps (mean ± std over seeds) into report.md + PNG plots.",
    )
    ap.add_argument(
        "sweeps", nargs="*", metavar="SWEEP_DIR", help="Hydra multirun dirs (or run dirs), or one benchmark log dir"
    )
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
    ap.add_argument(
        "--recipe",
        metavar="VARIANT",
        help="benchmark logs: the variant whose final quality the others race to (default: the log's "
        "report.json, else `recipe`)",
    )
    args = ap.parse_args(argv)
    if not args.sweeps and not args.wandb:
        ap.error("give at least one SWEEP_DIR (or --wandb PROJECT)")
    if len(args.sweeps) == 1 and is_bench_log(args.sweeps[0]) and not args.wandb:
        try:  # a benchmark log (runs.jsonl, e.g. experiments/results/speech): its own report
            s = bench_report(args.sweeps[0], args.out, baseline=args.baseline, recipe=args.recipe)
        except ReportError as e:
            print(f"voxinv.report: error: {e}", file=sys.stderr)
            return 2
        print(s["markdown"])
        return 0
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
