"""The benchmark report: report.md + summary.json (+ curves.png) of a benchmark log directory."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from voxinv import rundir
from voxinv.eval.formats import METRIC, SPEAKER_LOSS, columns
from voxinv.eval.report.bench.budget import budget_table
from voxinv.eval.report.bench.curves import _opt_curve, _recipe_of, _wins, early_stop_replay, speedups
from voxinv.eval.report.bench.graders import _graders_section
from voxinv.eval.report.bench.log import REFS, RUNS, SETTINGS, _ms, load, self_graded
from voxinv.eval.report.runs import ReportError
from voxinv.eval.report.stats import mean_std, paired_frame
from voxinv.figures import figure, save_png


def _curves_png(df: pd.DataFrame, variants: Sequence[str], path: Path) -> Path:
    """Mean over runs of the exported-so-far mrmel per evaluation, vs seconds (evaluations excluded) and
    vs step, for ``variants``."""
    fig = figure(figsize=(10, 4))
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
    return save_png(fig, path)


def bench_report(
    path: str | Path,
    out: str | Path | None = None,
    *,
    baseline: str | Mapping[str, str] | None = None,
    recipe: str | Mapping[str, str] | None = None,
    patience: int = 3,
    min_rel_delta: float = 0.002,
    title: str = "Speech benchmark on the proxy codec",
    plot_variants: Sequence[str] | None = None,
    notes: Sequence[str] | None = None,
    seen_clips: Sequence[str] | None = None,
    early_stop_every: int | None = None,
) -> dict:
    """Write report.md + summary.json (+ curves.png) of a benchmark log into ``out`` (default: ``path``).
    Unset ``baseline`` / ``recipe`` / ``plot_variants`` / ``notes`` / ``seen_clips`` (clips whose speaker the
    proxy's encoder was trained on: the encoder comparison is also given without them) /
    ``early_stop_every`` (the replay's evaluation grid in steps) come from the log's ``report.json``
    (``encoder_seen: {clips, why}``, ``early_stop_every``)."""
    df, enc, same = load(path)
    settings = json.loads((Path(path) / SETTINGS).read_text()) if (Path(path) / SETTINGS).is_file() else {}
    bdf = df.iloc[:0]
    if "budget" in df:  # budgeted runs (one run per steps=N) get their own table, not the per-run sections
        bdf, df = df[df.budget.notna()], df[df.budget.isna()].drop(columns="budget")
    baseline = baseline or settings.get("baseline")
    recipe = recipe or settings.get("recipe") or "recipe"
    plot_variants = plot_variants or settings.get("plot")
    notes = list(notes if notes is not None else settings.get("notes", []))
    out = Path(out) if out is not None else Path(path)
    out.mkdir(parents=True, exist_ok=True)
    keys = [k for k in columns("bench") if k in df.columns]
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
    md.append("| variant | n | clips | " + " | ".join(METRIC[k].long for k in keys) + " |")
    md.append("|---|--:|--:|" + "--:|" * len(keys))
    summary: dict = {"title": title, "variants": {}, "references": {}}
    for v, g in df.groupby("variant", sort=False):
        recs = g.to_dict("records")
        mine = {k for k in keys if any(self_graded(r, k) for r in recs)}  # cells graded by the loss's own model
        flag = " (spk self-graded)" if mine else ""
        md.append(
            f"| `{v}`{flag} | {len(g)} | {g['clip'].nunique()} | "
            + " | ".join(_ms(g[k].tolist()) + (" ‡" if k in mine else "") for k in keys)
            + " |"
        )
        summary["variants"][v] = {"n": len(g), "clips": int(g["clip"].nunique())}
        summary["variants"][v].update({k: list(mean_std(g[k].dropna().astype(float).tolist())) for k in keys})
        summary["variants"][v]["self_graded"] = sorted(mine)
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
            + ", ".join(f"{c} ↔ {same[c]['other']} {same[c]['spk']:.3f}" for c in clips if "spk" in same.get(c, {}))
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
        cells.append(f"{e['mrmel']:.4f} / {e.get('spk', math.nan):.3f}" if e else "–")
        cells.append(f"{same[c]['spk']:.3f}" if "spk" in same.get(c, {}) else "–")
        md.append(f"| {c} | " + " | ".join(cells) + " |")

    seen = set(seen_clips or settings.get("encoder_seen", {}).get("clips", []))
    md += ["", "## Against the encoder's own codes (is the inversion better?)", ""]
    if seen:
        md += [
            "Per clip = the clip's mean over its seeds. *Held out*: clips whose speaker the proxy codec never "
            "saw in training; *seen*: clips from its training sources ("
            + settings.get("encoder_seen", {}).get("why", "report.json `encoder_seen`")
            + "), where its encoder had the advantage of training on that very speaker.",
            "",
        ]
    else:
        md += ["Per clip = the clip's mean over its seeds.", ""]
    head = "| variant | runs: MR log-mel | runs: spk | clips: MR log-mel | clips: spk |"
    head += " held-out clips: MR log-mel | held-out clips: spk | seen clips: spk |" if seen else ""
    md += [head, "|---|" + "--:|" * (7 if seen else 4)]
    for v, g in df.groupby("variant", sort=False):
        g = g[g["clip"].isin(list(enc))]
        runs = {k: _wins(g, enc, k) for k in ("mrmel", "spk")}
        per_clip = g.groupby("clip")[["mrmel", "spk"]].mean().reset_index()
        clips_w = {k: _wins(per_clip, enc, k) for k in ("mrmel", "spk")}
        cells = [f"{w}/{n}" for w, n in (*runs.values(), *clips_w.values())]
        res = {
            "mrmel": list(runs["mrmel"]),
            "spk": list(runs["spk"]),
            "clips": {k: list(w) for k, w in clips_w.items()},
        }
        if seen:
            held = per_clip[~per_clip["clip"].isin(seen)]
            seen_pc = per_clip[per_clip["clip"].isin(seen)]
            res["held_out"] = {k: list(_wins(held, enc, k)) for k in ("mrmel", "spk")}
            res["seen"] = {k: list(_wins(seen_pc, enc, k)) for k in ("mrmel", "spk")}
            cells += [f"{w}/{n}" for w, n in (res["held_out"]["mrmel"], res["held_out"]["spk"], res["seen"]["spk"])]
        md.append(f"| `{v}` | " + " | ".join(cells) + " |")
        summary["variants"][v]["beats_encoder"] = res

    if "spk_dvec" in df.columns:
        gmd, summary["graders"] = _graders_section(df, enc, same, clips)
        md += gmd

    if baseline:  # a variant, or {tier: variant} (``*``: any other tier): pairs only like with like
        of = df.apply(lambda r: _recipe_of(r, baseline), axis=1)
        graded = columns("bench_graded")  # paired too where graders.jsonl has them
        cols = [*columns("bench_paired"), *(k for k in graded if k in df.columns and df[k].notna().any())]
        pf = df.assign(label=df.variant, target=df["clip"] + "/seed" + df.seed.astype(str))
        rows = []
        for b in dict.fromkeys(of):
            if b not in variants:
                raise ReportError(f"--baseline {b!r} is not a variant here: choose from {variants}")
            sub = pf[(pf.variant == b) | (of == b)]
            rows += [r | {"vs": b} for r in paired_frame(sub, b, cols, {k: METRIC[k].higher_better for k in cols})]
        md += ["", "## Paired differences against the baseline (same clip and seed): mean ± std (better on k/n)", ""]
        if any(k in SPEAKER_LOSS for k in cols):
            md += ["‡ = self-graded: the variant's (or the baseline's) loss uses that speaker model.", ""]
        md += [
            "| variant | vs | pairs | " + " | ".join(f"Δ {METRIC[k].long}" for k in cols) + " |",
            "|---|---|--:|" + "--:|" * len(cols),
        ]
        for r in rows:
            if r["n"]:
                pair = df[df.variant.isin([r["label"], r["vs"]])].to_dict("records")
                r["self_graded"] = [k for k in cols if any(self_graded(x, k) for x in pair)]
                cells = [
                    f"{r['mean'][k]:+.4f} ± {r['std'][k]:.4f} ({r['better'][k]}/{r['n']})"
                    + (" ‡" if k in r["self_graded"] else "")
                    if k in r["mean"]
                    else "–"
                    for k in cols
                ]
                md.append(f"| `{r['label']}` | `{r['vs']}` | {r['n']} | " + " | ".join(cells) + " |")
        summary["paired"] = {"baseline": baseline, "rows": rows}

    sp = speedups(df, recipe)
    if sp:
        md += ["", "## Time to the recipe's final quality (same clip and seed)", ""]
        md.append(
            "Seconds exclude the evaluations (the fp32 decodes that draw the curve); CPU s = the run process's CPU "
            "time (one torch thread: what the arithmetic costs, whatever else loads the machine); the speed-up is "
            "the recipe's "
            "seconds for all its steps / the variant's seconds until its exported codes reach the recipe's final "
            "MR log-mel (resolution: the evaluation grid). Both runs of a pair ran back to back only where they "
            "share a tier."
        )
        md += [
            "",
            "| variant | vs | pairs | reached | speed-up (wall s), median [min–max] | speed-up (CPU s), median "
            "[min–max] · ≥ 10× | speed-up (steps), median | ends better |",
        ]
        md.append("|---|---|--:|--:|--:|--:|--:|--:|")
        for v, o in sp.items():
            w = f"{np.median(o['wall']):.1f}× [{min(o['wall']):.1f}–{max(o['wall']):.1f}]" if o["wall"] else "–"
            c = (
                f"{np.median(o['cpu']):.1f}× [{min(o['cpu']):.1f}–{max(o['cpu']):.1f}] · "
                f"{sum(x >= 10 for x in o['cpu'])}/{o['n']}"
                if o["cpu"]
                else "–"
            )
            st = f"{np.median(o['steps']):.1f}×" if o["steps"] else "–"
            md.append(
                f"| `{v}` | `{o['recipe']}` | {o['n']} | {len(o['steps'])}/{o['n']} | {w} | {c} | {st} | "
                f"{o['better']}/{o['n']} |"
            )
            summary["variants"][v]["vs_recipe"] = o

    if not bdf.empty:
        bs = settings.get("budget", {})
        lines, summary["budget"] = budget_table(
            bdf, bs.get("baseline", "budget_default"), bs.get("recipe"), df, bs.get("clock")
        )
        md += ["", "## Budgeted runs: MR log-mel (median CPU s) per budget N, one run of steps=N each", ""]
        md.append(
            "Each cell is a separate run with `steps=N`, scored on its exported codes (what a user with that "
            "budget gets), not a point of a longer run's curve. MR log-mel: mean over clips of the seed means; "
            "CPU s: the run process's CPU seconds for the init and the N steps, evaluations excluded, median "
            "over clips (one torch thread)."
        )
        md += ["", *lines]

    every = early_stop_every or settings.get("early_stop_every")
    es = early_stop_replay(df, patience, min_rel_delta, every)
    grid = f"evaluations every {every} steps" if every else "evaluations as recorded"
    md += [
        "",
        f"## Early stop replayed on the curves (patience {patience} evaluations, {grid}, min_rel_delta "
        f"{min_rel_delta})",
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
