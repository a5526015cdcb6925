"""The benchmark report's budgeted-runs table: one run of ``steps=N`` per budget N, and the CPU seconds a
variant needs to reach the default's and the recipe's quality."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from voxinv.eval.report.bench.log import run_cpu_s

if TYPE_CHECKING:
    from collections.abc import Mapping


def budget_table(
    bdf: pd.DataFrame,
    baseline: str,
    recipe: str | None,
    others: pd.DataFrame | None = None,
    clock: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[list[str], dict]:
    """Budgeted runs (rows with ``budget`` N: one run of ``steps=N`` each, scored at the end): mean MR log-mel
    and median CPU s per variant and N; per clip, the least CPU s at which a variant's budgeted run (seed mean)
    reaches ``baseline``'s largest-budget MR log-mel and ``recipe``'s final, as speed-ups over their CPU s.
    A ``recipe`` without budgeted rows is read from its ordinary runs in ``others`` (final scores, seed means).
    ``clock``: ``{variant: {"default" | "recipe": timing variant}}`` for a variant run on another machine than
    the references: its speed-ups divide the timing variant's CPU s (the reference re-run beside it, at its
    largest budget), not the reference's own; the levels stay the references' seed means."""
    bdf = bdf.assign(cpu=[run_cpu_s(c) for c in bdf.curve], budget=bdf.budget.astype(int))
    if recipe and recipe not in set(bdf.variant) and others is not None:
        r = others[(others.variant == recipe) & others["clip"].isin(set(bdf["clip"]))]
        r = r.assign(cpu=[run_cpu_s(c) for c in r.curve], budget=r.steps.astype(int))
        bdf = pd.concat([bdf, r[[c for c in bdf.columns if c in r.columns]]], ignore_index=True)
    cell = bdf.groupby(["variant", "clip", "budget"])[["mrmel", "cpu"]].mean().reset_index()  # seed means
    budgets = sorted(b for b in cell.budget.unique())
    md = [
        "| variant | clips | " + " | ".join(f"N={b}" for b in budgets) + " |",
        "|---|--:|" + "--:|" * len(budgets),
    ]
    out: dict = {"baseline": baseline, "recipe": recipe, "variants": {}, "per_clip": {}}
    for v in dict.fromkeys(bdf.variant):
        g = cell[cell.variant == v]
        cells, sv = [], {}
        for b in budgets:
            h = g[g.budget == b]
            if h.empty:
                cells.append("–")
                continue
            seeds = bdf[(bdf.variant == v) & (bdf.budget == b)].groupby("clip").size()
            sv[int(b)] = {"mrmel": float(h.mrmel.mean()), "cpu_median": float(h.cpu.median()), "clips": len(h)}
            extra = ("" if seeds.max() == 1 else f", {seeds.max()} seeds") + (
                "" if len(h) == g["clip"].nunique() else f", {len(h)} clip{'s' if len(h) > 1 else ''}"
            )  # a cell over fewer clips than its row says so: its mean is not comparable
            cells.append(f"{h.mrmel.mean():.4f} ({h.cpu.median():.1f} s{extra})")
        md.append(f"| `{v}` | {g['clip'].nunique()} | " + " | ".join(cells) + " |")
        out["variants"][v] = sv
    base = cell[cell.variant == baseline]
    if base.empty:
        return md, out
    top = int(base.budget.max())
    md += [
        "",
        f"Per clip: CPU s of the cheapest budget whose run (seed mean) reaches `{baseline}`'s N={top} MR log-mel"
        + (f" / `{recipe}`'s final" if recipe else "")
        + "; speed-up = their CPU s / that CPU s (budgets are the grid: a level reached between two budgets "
        "counts at the larger one).",
        "",
        "| variant | clip | level: default N="
        + str(top)
        + " | CPU s to reach (N) | speed-up |"
        + (" level: recipe | CPU s to reach (N) | speed-up |" if recipe else "")
        + f" N={top} vs default N={top} |",
        "|---|---|--:|--:|--:|" + ("--:|--:|--:|" if recipe else "") + "--:|",
    ]
    speed: dict[str, dict[str, list]] = {}
    clock = dict(clock or {})
    timers = {t for by in clock.values() for t in by.values()}
    for v in dict.fromkeys(bdf.variant):
        # references are not rows: the recipe and the re-timings (the baseline stays: its time to the recipe's final)
        if v == recipe or v in timers:
            continue
        g = cell[cell.variant == v].sort_values("budget")
        for c in dict.fromkeys(g["clip"]):
            gc, bc = g[g["clip"] == c], base[(base["clip"] == c) & (base.budget == top)]
            if bc.empty:
                continue
            refs = [("default", float(bc.mrmel.iloc[0]), float(bc.cpu.iloc[0]))]
            rc = cell[(cell.variant == recipe) & (cell["clip"] == c)] if recipe else cell.iloc[:0]
            if recipe and not rc.empty:
                rc = rc[rc.budget == rc.budget.max()]
                refs.append(("recipe", float(rc.mrmel.iloc[0]), float(rc.cpu.iloc[0])))
            for i, (name, level, _) in enumerate(refs):
                t = cell[(cell.variant == clock.get(v, {}).get(name)) & (cell["clip"] == c)]
                if not t.empty:  # the reference's CPU s on this variant's machine
                    refs[i] = (name, level, float(t[t.budget == t.budget.max()].cpu.iloc[0]))
            cells, row = [], {}
            for name, level, ref_cpu in refs:
                hit = gc[gc.mrmel <= level]
                if hit.empty:
                    cells += [f"{level:.4f}", "not reached", "–"]
                    row[name] = {"level": level, "ref_cpu": ref_cpu, "cpu": None, "budget": None, "speedup": None}
                else:
                    h = hit.iloc[0]
                    sp = ref_cpu / max(float(h.cpu), 1e-9)
                    cells += [f"{level:.4f}", f"{h.cpu:.1f} ({int(h.budget)})", f"{sp:.1f}×"]
                    row[name] = {"level": level, "ref_cpu": ref_cpu, "cpu": float(h.cpu), "budget": int(h.budget),
                                 "speedup": sp}  # fmt: skip
                speed.setdefault(v, {}).setdefault(name, []).append(row[name]["speedup"])
            if recipe and len(refs) == 1:
                cells += ["–", "–", "–"]
            end = gc[gc.budget == top]
            d = float(end.mrmel.iloc[0]) - refs[0][1] if not end.empty else None
            row["end_delta"] = d
            cells.append("–" if d is None else f"{d:+.4f}")
            md.append(f"| `{v}` | {c} | " + " | ".join(cells) + " |")
            out["per_clip"].setdefault(v, {})[c] = row
    md += [
        "",
        "| variant | vs | clips | reached | speed-up, median (unreached clips count as 0×) |",
        "|---|---|--:|--:|--:|",
    ]
    for v, by in speed.items():
        for name, sps in by.items():
            med = float(np.median([x or 0.0 for x in sps]))
            md.append(f"| `{v}` | {name} | {len(sps)} | {sum(x is not None for x in sps)}/{len(sps)} | {med:.1f}× |")
            out["variants"].setdefault(v, {})[f"speedup_vs_{name}_median"] = med
    return md, out
