"""Markdown tables of the report (pandas ``to_markdown``): configurations, paired differences, runs."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from voxinv.eval.formats import METRIC, columns
from voxinv.eval.report.stats import GroupStats, run_values, sort_stats

PER_RUN_KEYS = columns("per_run")  # import-time snapshot; per_run_table reads the registry


def to_markdown(rows: list[list[str]], head: list[str], left: int = 1) -> str:
    """A pipe table of preformatted cells: the first ``left`` columns left-aligned, the others right."""
    df = pd.DataFrame(rows, columns=head)
    return df.to_markdown(index=False, disable_numparse=True, colalign=["left"] * left + ["right"] * (len(head) - left))


def _cell(s: GroupStats, k: str) -> str:
    if k not in s.mean:
        return "–"
    f = METRIC[k].format
    txt = f"{f(s.mean[k])} ± {f(s.std[k])}" if s.count[k] > 1 else f(s.mean[k])
    return txt + (f" (n={s.count[k]})" if s.count[k] != s.n else "")


def _ceil_cell(v: float | None, k: str) -> str:
    if v is None:
        return ""
    return "∞" if math.isinf(v) else METRIC[k].format(v)


def markdown_table(
    stats: Sequence[GroupStats],
    sort_by: str = "si_sdr",
    metrics: Sequence[str] | None = None,
    ceilings: Sequence[dict] = (),
) -> str:
    """One row per configuration (best first by ``sort_by``), then ceiling rows.

    Cells are ``mean ± std`` over the group's runs (``(n=k)`` when only k runs have the value);
    columns no group has are dropped; the sort column's header is bold, arrows say which way is better.
    """
    keys = [k for k in (metrics or columns("report")) if any(k in s.mean for s in stats)]
    arrow = {True: " ↑", False: " ↓"}
    head = ["config", "n"] + [
        (f"**{METRIC[k].header}**" if k == sort_by else METRIC[k].header) + arrow[METRIC[k].higher_better] for k in keys
    ]
    rows = [[f"`{s.label}`", str(s.n)] + [_cell(s, k) for k in keys] for s in sort_stats(stats, sort_by)]
    rows += [[f"*{c['label']}*", ""] + [_ceil_cell(c["values"].get(k), k) for k in keys] for c in ceilings]
    return to_markdown(rows, head)


def per_run_table(stats: Sequence[GroupStats], reference: dict[str, float] | None = None) -> str:
    """One row per run: configuration, seed, run directory and the main values."""
    rows, keys = [], columns("per_run")
    for s in stats:
        for r in s.runs:
            v = run_values(r, reference)
            rows.append(
                [f"`{s.label}`", str(r.seed), r.path.name] + [METRIC[k].format(v[k]) if k in v else "–" for k in keys]
            )
    return to_markdown(rows, ["config", "seed", "run"] + [METRIC[k].header for k in keys], left=3)


def paired_table(rows: Sequence[dict], baseline: str, keys: Sequence[str] | None = None) -> str:
    """Markdown for :func:`~voxinv.eval.report.stats.paired_differences`: ``Δ mean ± std (better on k/n)``."""
    keys = [k for k in (columns("paired") if keys is None else keys) if any(k in r["mean"] for r in rows)]
    head = [f"config − `{baseline}`", "pairs"] + [f"Δ {METRIC[k].header}" for k in keys]
    body = []
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
        body.append([f"`{r['label']}`", str(r["n"])] + cells)
    return to_markdown(body, head)
