"""Benchmark logs (one JSON line per run, e.g. ``experiments/results/speech``) → report.md, summary.json,
curves.png: ``python -m voxinv.report experiments/results/speech``.

A benchmark log directory holds ``runs.jsonl`` (per run: ``variant``, ``tier``, ``clip``, ``seed``, the
scores, ``wall_s`` and ``curve`` = the evaluations as ``[wall s, mrmel, objective, evaluation s so far,
step]``; older rows lack the last two) and ``references.jsonl`` (per clip: the encoder's own codes
decoded, ``variant: encoder``, and a second recording of the same speaker, ``variant: same_speaker``,
where one exists: the speaker-similarity ceiling), and optionally ``report.json`` (the benchmark's report
settings: ``baseline``, ``recipe`` as a variant or {tier: variant}, ``plot``, ``notes``; arguments given
to :func:`bench_report` win). Statistics are the sweep report's
(:func:`~voxinv.eval.report.stats.mean_std`, :func:`~voxinv.eval.report.stats.paired_frame`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxinv import rundir
from voxinv.eval.report.runs import ReportError
from voxinv.eval.report.stats import mean_std, paired_frame

RUNS, REFS = "runs.jsonl", "references.jsonl"
SETTINGS = "report.json"  # optional, written by the benchmark: {"baseline", "recipe", "plot", "notes"}
# score → (header, higher is better); mrmel = MR log-mel L1 in log10 units (eval.json's metric)
SCORES = {
    "mrmel": ("MR log-mel", False),
    "mrstft": ("MR-STFT", False),
    "spk": ("spk", True),
    "env": ("env corr", True),
    "code_sem": ("sem % = enc", True),
    "code_ac": ("ac % = enc", True),
    "si_sdr": ("SI-SDR dB", True),
    "wall_s": ("wall s", False),
}
PAIRED = ("mrmel", "mrstft", "spk", "env", "wall_s")


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
    df = pd.DataFrame(runs)
    df["spk"] = df["spk"].astype(float)  # None (grader unavailable) → NaN
    return df, enc, same


def _ms(v: Sequence) -> str:
    v = [float(x) for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    m, s = mean_std(v)
    return f"{m:.4f} ± {s:.4f}" if len(v) > 1 else f"{m:.4f}"


def _opt_curve(curve: list, steps: int) -> list[tuple[float, float, float, int]]:
    """``(seconds without evaluations, mrmel, objective, step)`` per evaluation. Old rows (wall s, no
    step): evaluation time included, steps spread evenly over ``steps`` (they ran without early stop)."""
    n = max(len(curve) - 1, 1)
    return [
        (p[0] - (p[3] if len(p) > 3 else 0.0), p[1], p[2], int(p[4]) if len(p) > 4 else round(i * steps / n))
        for i, p in enumerate(curve)
    ]


def time_to(curve: list, level: float, steps: int) -> tuple[float, int] | None:
    """First (seconds without evaluations, step) at which the exported codes so far — the best by the
    run's objective, as the export picks them — have mrmel ≤ ``level``; None if never."""
    best_obj, best_mel = math.inf, math.inf
    for t, mel, obj, step in _opt_curve(curve, steps):
        if obj < best_obj:
            best_obj, best_mel = obj, mel
        if best_mel <= level:
            return t, step
    return None


def _recipe_of(row, recipe: str | Mapping[str, str]) -> str:
    return recipe if isinstance(recipe, str) else recipe.get(row.get("tier", ""), recipe.get("*", ""))


def speedups(df: pd.DataFrame, recipe: str | Mapping[str, str]) -> dict[str, dict]:
    """Per variant: time and steps to the recipe's final mrmel on the same (clip, seed), as speed-ups
    (recipe's seconds / seconds to reach, both without evaluations; recipe's steps / steps to reach) and
    whether the variant ends better. ``recipe``: a variant, or {tier: variant} (``*``: any other tier)."""
    out: dict[str, dict] = {}
    idx = df.set_index(["variant", "clip", "seed"])
    for r in df.to_dict("records"):
        rv = _recipe_of(r, recipe)
        if not rv or r["variant"] == rv or (rv, r["clip"], r["seed"]) not in idx.index:
            continue
        ref = idx.loc[(rv, r["clip"], r["seed"])]
        o = out.setdefault(r["variant"], {"recipe": rv, "n": 0, "wall": [], "steps": [], "better": 0, "pairs": []})
        o["n"] += 1
        o["better"] += int(r["mrmel"] < ref["mrmel"])
        hit = time_to(r["curve"], float(ref["mrmel"]), int(r["steps"]))
        ref_t = _opt_curve(ref["curve"], int(ref["steps"]))[-1][0]
        pair = {"clip": r["clip"], "seed": int(r["seed"]), "recipe_mrmel": float(ref["mrmel"]), "mrmel": r["mrmel"]}
        if hit is not None:
            t, step = hit
            o["wall"].append(ref_t / max(t, 1e-3))
            pair.update(seconds=round(t, 2), recipe_seconds=round(ref_t, 2), speedup=round(o["wall"][-1], 2))
            o["steps"].append(float(ref["steps"]) / max(step, 1))
            pair["step"] = step
        o["pairs"].append(pair)
    return out


def early_stop_replay(df: pd.DataFrame, patience: int, min_rel_delta: float) -> dict[str, dict]:
    """``callbacks.early_stop`` replayed on the recorded curves (simulated, not run): per variant how many
    runs would stop early, the exported mrmel at the stop minus the full run's, and the time saved."""
    from voxinv.invert.callbacks import evals_since_improvement

    out = {}
    for v, g in df.groupby("variant", sort=False):
        stops, dm, saved = 0, [], []
        for r in g.itertuples():
            objs = [p[2] for p in r.curve]
            k = next(
                (i for i in range(len(objs)) if evals_since_improvement(objs[: i + 1], min_rel_delta) >= patience), None
            )
            if k is None or k == len(objs) - 1:
                dm.append(0.0)
                saved.append(0.0)
                continue
            stops += 1
            best = min(range(k + 1), key=lambda i: objs[i])
            dm.append(r.curve[best][1] - r.mrmel)
            saved.append(1 - r.curve[k][0] / r.curve[-1][0])
        out[v] = {"n": len(g), "stopped": stops, "dmrmel": dm, "saved": saved}
    return out


def _curves_png(df: pd.DataFrame, variants: Sequence[str], path: Path) -> Path | None:
    """Mean over runs of the exported-so-far mrmel per evaluation, vs seconds (evaluations excluded) and
    vs step, for ``variants``."""
    try:
        from voxinv.eval.report.plots import _figure, _save_png
    except ImportError:
        return None
    fig = _figure(figsize=(10, 4))
    ax_t, ax_s = fig.subplots(1, 2, sharey=True)
    for v in variants:
        g = df[df.variant == v]
        seqs = []
        for curve, steps in zip(g.curve, g.steps):
            best_obj, best_mel, seq = math.inf, math.inf, []
            for t, mel, obj, step in _opt_curve(curve, int(steps)):
                if obj < best_obj:
                    best_obj, best_mel = obj, mel
                seq.append((t, best_mel, step))
            seqs.append(np.array(seq))
        if not seqs:
            continue
        n = min(len(s) for s in seqs)
        arr = np.stack([s[:n] for s in seqs])  # [runs, evals, (t, mrmel, step)]
        lab = f"{v} (n={len(seqs)})"
        ax_t.plot(arr[:, :, 0].mean(0), arr[:, :, 1].mean(0), marker=".", ms=3, label=lab)
        ax_s.plot(arr[:, :, 2].mean(0), arr[:, :, 1].mean(0), marker=".", ms=3, label=lab)
    ax_t.set_xlabel("seconds (init + steps, evaluations excluded)")
    ax_t.set_xscale("symlog")
    ax_s.set_xlabel("step")
    ax_t.set_ylabel("MR log-mel L1 (log10), mean over runs")
    for ax in (ax_t, ax_s):
        ax.grid(alpha=0.3)
    ax_s.legend()
    return _save_png(fig, path)


def bench_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    baseline: str | None = None,
    recipe: str | Mapping[str, str] | None = None,
    patience: int = 3,
    min_rel_delta: float = 0.002,
    title: str = "Speech benchmark on the proxy codec",
    plot_variants: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
) -> dict:
    """Write report.md + summary.json (+ curves.png) of a benchmark log into ``out`` (default: ``path``).
    Unset ``baseline`` / ``recipe`` / ``plot_variants`` / ``notes`` come from the log's ``report.json``."""
    df, enc, same = load(path)
    settings = json.loads((Path(path) / SETTINGS).read_text()) if (Path(path) / SETTINGS).is_file() else {}
    baseline = baseline or settings.get("baseline")
    recipe = recipe or settings.get("recipe") or "recipe"
    plot_variants = plot_variants or settings.get("plot")
    notes = list(notes if notes is not None else settings.get("notes", []))
    out = Path(out) if out is not None else Path(path)
    out.mkdir(parents=True, exist_ok=True)
    keys = [k for k in SCORES if k in df.columns]
    variants = list(dict.fromkeys(df.variant))
    clips = list(dict.fromkeys(df["clip"]))
    md = [f"# {title}", ""]
    md.append(
        f"{len(df)} runs on {len(clips)} clips ("
        + ", ".join(f"`{v}`: {n}" for v, n in df.variant.value_counts(sort=False).items())
        + f"); rows in `{RUNS}` (curves included), references in `{REFS}`. Means ± sample std over the "
        "(clip, seed) runs of a variant; lower is better for MR log-mel / MR-STFT / wall s, higher for spk "
        "(resemblyzer GE2E cosine; *self-graded* where the loss has `spk`) / env corr. `sem/ac % = enc`: codes "
        "equal to the encoder's (diagnostic only: the decoder is many-to-one). SI-SDR is meaningless on the "
        "proxy (untrained phase): reported, never decided on."
    )
    md += ["", *notes, "", "## Means per variant", ""] if notes else ["", "## Means per variant", ""]
    md.append("| variant | n | clips | " + " | ".join(SCORES[k][0] for k in keys) + " |")
    md.append("|---|--:|--:|" + "--:|" * len(keys))
    summary: dict = {"title": title, "variants": {}, "references": {}}
    for v, g in df.groupby("variant", sort=False):
        flag = " (spk self-graded)" if "self_graded" in g and g.self_graded.any() else ""
        md.append(
            f"| `{v}`{flag} | {len(g)} | {g['clip'].nunique()} | " + " | ".join(_ms(g[k].tolist()) for k in keys) + " |"
        )
        summary["variants"][v] = {"n": len(g), "clips": int(g["clip"].nunique())}
        summary["variants"][v].update({k: list(mean_std(g[k].dropna().astype(float).tolist())) for k in keys})
    for name, refs in (("encoder codes", enc), ("same speaker, other recording (spk ceiling)", same)):
        rows = [refs[c] for c in clips if c in refs]
        if rows:
            cells = [
                _ms([r.get(k) for r in rows]) if k != "wall_s" and any(k in r for r in rows) else "–" for k in keys
            ]
            md.append(f"| *{name}* | {len(rows)} | {len(rows)} | " + " | ".join(cells) + " |")
            summary["references"][name] = {
                k: list(mean_std([r[k] for r in rows if r.get(k) is not None]))
                for k in keys
                if any(r.get(k) is not None for r in rows)
            }
    if same:
        md += [
            "",
            "Same-speaker pairs: "
            + ", ".join(f"{c} ↔ {same[c]['other']} {same[c]['spk']:.3f}" for c in clips if c in same)
            + ".",
        ]

    # per clip: the variants that cover most clips, mrmel (mean over seeds) / spk
    wide = [v for v in variants if df[df.variant == v]["clip"].nunique() >= max(2, len(clips) // 2)] or variants
    md += ["", "## Per clip: MR log-mel (mean over seeds) / spk, variants run on ≥ half of the clips", ""]
    md.append("| clip | " + " | ".join(f"`{v}`" for v in wide) + " | *encoder* | *same spk* |")
    md.append("|---|" + "--:|" * (len(wide) + 2))
    for c in clips:
        cells = []
        for v in wide:
            h = df[(df.variant == v) & (df["clip"] == c)]
            sd = f" ± {h.mrmel.std(ddof=1):.4f}" if len(h) > 1 else ""
            cells.append("–" if h.empty else f"{h.mrmel.mean():.4f}{sd} / {h.spk.mean():.3f}")
        e = enc.get(c)
        cells.append(f"{e['mrmel']:.4f} / {e['spk']:.3f}" if e else "–")
        cells.append(f"{same[c]['spk']:.3f}" if c in same else "–")
        md.append(f"| {c} | " + " | ".join(cells) + " |")

    md += ["", "## Against the encoder's own codes (per run: is the inversion better?)", ""]
    md += ["| variant | MR log-mel better | spk better |", "|---|--:|--:|"]
    for v, g in df.groupby("variant", sort=False):
        mb = [r.mrmel < enc[r.clip]["mrmel"] for r in g.itertuples() if r.clip in enc]
        sb = [r.spk > enc[r.clip]["spk"] for r in g.itertuples() if r.clip in enc and not math.isnan(r.spk)]
        md.append(f"| `{v}` | {sum(mb)}/{len(mb)} | {sum(sb)}/{len(sb)} |")
        summary["variants"][v]["beats_encoder"] = {"mrmel": [int(sum(mb)), len(mb)], "spk": [int(sum(sb)), len(sb)]}

    if baseline:
        if baseline not in variants:
            raise ReportError(f"--baseline {baseline!r} is not a variant here: choose from {variants}")
        pf = df.assign(label=df.variant, target=df["clip"] + "/seed" + df.seed.astype(str))
        rows = paired_frame(pf, baseline, PAIRED, {k: SCORES[k][1] for k in PAIRED})
        md += ["", f"## Paired differences against `{baseline}` (same clip and seed): mean ± std (better on k/n)", ""]
        md += [
            "| variant | pairs | " + " | ".join(f"Δ {SCORES[k][0]}" for k in PAIRED) + " |",
            "|---|--:|" + "--:|" * len(PAIRED),
        ]
        for r in rows:
            if r["n"]:
                cells = [
                    f"{r['mean'][k]:+.4f} ± {r['std'][k]:.4f} ({r['better'][k]}/{r['n']})" if k in r["mean"] else "–"
                    for k in PAIRED
                ]
                md.append(f"| `{r['label']}` | {r['n']} | " + " | ".join(cells) + " |")
        summary["paired"] = {"baseline": baseline, "rows": rows}

    sp = speedups(df, recipe)
    if sp:
        md += ["", "## Time to the recipe's final quality (same clip and seed)", ""]
        md.append(
            "Seconds exclude the evaluations (the fp32 decodes that draw the curve); the speed-up is the recipe's "
            "seconds for all its steps / the variant's seconds until its exported codes reach the recipe's final "
            "MR log-mel (resolution: the evaluation grid). Both runs of a pair ran back to back only where they "
            "share a tier."
        )
        md += [
            "",
            "| variant | vs | pairs | reached | speed-up (s), median [min–max] | speed-up (steps), median | ends better |",
        ]
        md.append("|---|---|--:|--:|--:|--:|--:|")
        for v, o in sp.items():
            w = f"{np.median(o['wall']):.1f}× [{min(o['wall']):.1f}–{max(o['wall']):.1f}]" if o["wall"] else "–"
            st = f"{np.median(o['steps']):.1f}×" if o["steps"] else "–"
            md.append(
                f"| `{v}` | `{o['recipe']}` | {o['n']} | {len(o['wall'])}/{o['n']} | {w} | {st} | {o['better']}/{o['n']} |"
            )
            summary["variants"][v]["vs_recipe"] = o

    es = early_stop_replay(df, patience, min_rel_delta)
    md += [
        "",
        f"## Early stop replayed on the curves (patience {patience} evaluations, min_rel_delta {min_rel_delta})",
        "",
    ]
    md += [
        "| variant | n | would stop early | Δ MR log-mel at the stop vs full run | time saved |",
        "|---|--:|--:|--:|--:|",
    ]
    for v, o in es.items():
        md.append(
            f"| `{v}` | {o['n']} | {o['stopped']}/{o['n']} | {_ms(o['dmrmel'])} | {100 * np.mean(o['saved']):.0f} % |"
        )

    png = _curves_png(df, list(plot_variants) if plot_variants else wide, out / "curves.png")
    if png is not None:
        md += ["", "## Quality vs time", "", f"![MR log-mel vs seconds and steps]({png.name})", ""]
        md.append(
            "Mean over runs of the exported-so-far MR log-mel (the best codes by the run's objective) at each "
            "evaluation; left: seconds without evaluations, right: step."
        )
    rundir.atomic_write(out / "report.md", "\n".join(md) + "\n")
    rundir.write_json(out / "summary.json", summary, indent=1)
    summary["markdown"] = "\n".join(md)
    return summary
