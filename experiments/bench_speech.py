"""Speech benchmark on the proxy codec: invert real clips, score them, compare with the proxy's encoder.

    python experiments/bench_speech.py run    [--tiers core,ablate,cd] [--out DIR]   # resumable, incremental
    python experiments/bench_speech.py report [--out DIR]                            # report.md + summary.json

The plan (clips, crop, seeds, variants = Hydra overrides) is ``experiments/bench_speech.yaml``; clips
come from ``make data`` (``data/benchmarks/real``, or ``--clips DIR``). Each inversion is a normal run
directory (``python -m voxinv.report DIR`` reads them too) under ``<work>/runs/<variant>/<clip>/seed<s>``
(default ``multirun/bench_speech``); after each run one JSON line with its scores is appended to
``<out>/runs.jsonl`` (default ``experiments/results/speech``), so a partial run
still yields a report. Reference rows per clip: the proxy encoder's own codes decoded (``encoder``)
and, for speaker similarity, another recording of the same speaker (``same_speaker``, a ceiling).

Scores (all on the exported codes' fp32 decode vs the target, equal lengths): ``mrmel`` MR log-mel L1
in log10 units (eval.json's metric, :func:`voxinv.voxtral.proxy.mr_log_mel`), ``mrstft`` (auraloss
defaults), ``spk`` resemblyzer GE2E cosine (flagged ``self_graded`` when the loss has ``spk``: the same
weights), ``env`` log-energy envelope correlation, ``code_sem`` / ``code_ac`` agreement (%) with the
encoder's codes (diagnostic: the decoder is many-to-one), ``si_sdr`` (meaningless on the proxy: its
phase is untrained; reported, never decided on), wall time, and the curve of mrmel vs wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
PLAN = Path(__file__).with_suffix(".yaml")
LN10 = math.log(10)


def load_plan(path: Path = PLAN) -> dict:
    return yaml.safe_load(path.read_text())


def clip_path(clips_dir: Path, clip_id: str) -> Path:
    p = clips_dir / f"{clip_id}.wav"
    if not p.is_file():
        raise SystemExit(f"bench_speech: error: clip {p} missing: run `make data` or pass --clips DIR")
    return p


def crop(clips_dir: Path, clip_id: str, seconds: float, out: Path) -> Path:
    """The first ``seconds`` of the clip (clips are silence-trimmed) as ``<out>/clips/<id>.wav``."""
    from voxinv.audio import read_audio, write_wav

    dst = out / "clips" / f"{clip_id}.wav"
    if not dst.is_file():
        wav = read_audio(clip_path(clips_dir, clip_id), 24000)
        n = int(round(seconds * 24000))
        if wav.numel() < n:
            raise SystemExit(f"bench_speech: error: clip {clip_id} is shorter than crop_s={seconds}")
        write_wav(dst, wav[:n])
    return dst


# ------------------------------------------------------------------------------------------- scoring


def _spk(a: np.ndarray, b: np.ndarray) -> float | None:
    from voxinv.eval import speaker_similarity

    try:
        return speaker_similarity(a, b, 24000, "resemblyzer")
    except Exception as e:  # grader unavailable or silent audio: recorded as missing, never as 0
        print(f"bench_speech: speaker similarity unavailable ({e})", file=sys.stderr)
        return None


def score(target: torch.Tensor, rec: torch.Tensor, codes: torch.Tensor, enc_codes: torch.Tensor) -> dict:
    """Scores of one reconstruction ``rec`` ``[N]`` of ``target`` ``[N]`` (codes ``[T, 37]``)."""
    from voxinv.eval import mrstft_distance, si_sdr
    from voxinv.voxtral.proxy import envelope_correlation, mr_log_mel

    x, y = target.double().numpy(), rec.double().numpy()
    return {
        "mrmel": mr_log_mel(target, rec),
        "mrstft": mrstft_distance(x, y),
        "spk": _spk(x, y),
        "env": envelope_correlation(target, rec),
        "si_sdr": si_sdr(x, y),
        "code_sem": 100 * float((codes[:, 0] == enc_codes[:, 0]).double().mean()),
        "code_ac": 100 * float((codes[:, 1:] == enc_codes[:, 1:]).double().mean()),
    }


class Proxy:
    """The proxy codec (fp32, with encoder) and per-clip encoder references, loaded once."""

    def __init__(self, cache: dict):
        from omegaconf import OmegaConf

        from voxinv.run import CONF_DIR
        from voxinv.voxtral.checkpoint import Checkpoint
        from voxinv.voxtral.codec import load_codec
        from voxinv.voxtral.models import model_path

        cfg = OmegaConf.create({"model": OmegaConf.load(Path(CONF_DIR) / "model" / "proxy.yaml")})
        self.codec = load_codec(Checkpoint(model_path(cfg.model)), dtype=torch.float32)
        self.cache = cache

    def target(self, path: Path, common: list[str]) -> torch.Tensor:
        """The waveform an inversion of ``path`` fits (same loading as the runs: target=file settings)."""
        from hydra import compose, initialize_config_dir

        from voxinv.invert.target import from_file
        from voxinv.run import CONF_DIR

        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            t = compose("config", overrides=[*common, f"target.path={path}"]).target
        return from_file(path, self.codec, trim=t.trim, trim_db=t.trim_db, peak=t.peak, max_seconds=t.max_seconds).wav

    def encoder(self, clip_id: str, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from voxinv.voxtral.proxy import encoder_round_trip

        if clip_id not in self.cache:
            self.cache[clip_id] = encoder_round_trip(self.codec, target)
        return self.cache[clip_id]


def run_one(variant: str, overrides: list[str], clip: Path, seed: int, out: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from voxinv.run import CONF_DIR, run

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"target.path={clip}", f"seed={seed}"])
    return run(cfg, out)


def cmd_run(args) -> int:
    import soundfile as sf

    from voxinv.voxtral.codes import load_codes

    torch.set_num_threads(args.threads)
    plan = load_plan(args.plan)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "runs.jsonl"
    done = set()
    if log.is_file():
        done = {(r["variant"], r["clip"], r["seed"]) for r in map(json.loads, log.read_text().splitlines())}
    proxy = Proxy({})
    common = list(plan["common"])
    tiers = args.tiers.split(",") if args.tiers else list(plan["tiers"])
    refs = out / "references.jsonl"
    have_refs = set()
    if refs.is_file():
        have_refs = {r["clip"] for r in map(json.loads, refs.read_text().splitlines())}
    for tier in tiers:
        spec = plan["tiers"][tier]
        seeds = spec.get("seeds", plan["seeds"])
        for clip_id in spec["clips"]:
            path = crop(Path(args.clips), clip_id, float(plan["crop_s"]), work)
            target = proxy.target(path, common)
            enc_codes, enc_wav = proxy.encoder(clip_id, target)
            if clip_id not in have_refs:
                row = {"clip": clip_id, "variant": "encoder", **score(target, enc_wav, enc_codes, enc_codes)}
                with refs.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                have_refs.add(clip_id)
        for variant in spec["variants"]:
            for seed in seeds:
                for clip_id in spec["clips"]:
                    if (variant, clip_id, seed) in done:
                        continue
                    path = work / "clips" / f"{clip_id}.wav"
                    rd = work / "runs" / variant / clip_id / f"seed{seed}"
                    t0 = time.time()
                    m = run_one(variant, common + list(plan["variants"][variant]), path, seed, rd)
                    wall = time.time() - t0
                    target = torch.from_numpy(sf.read(str(rd / "target.wav"), dtype="float32")[0])
                    rec = torch.from_numpy(sf.read(str(rd / "reconstruction.wav"), dtype="float32")[0])
                    enc_codes, _ = proxy.encoder(clip_id, target)
                    s = score(target, rec, load_codes(rd / "codes.safetensors"), enc_codes)
                    init_s = float(m["init"].get("seconds", 0.0))
                    curve = [(init_s + h["wall_s"], h["mel"] / LN10, h["objective"]) for h in m["history"]]
                    row = {
                        "variant": variant,
                        "tier": tier,
                        "clip": clip_id,
                        "seed": seed,
                        **s,
                        "self_graded": "spk" in m["loss_models"],
                        "objective": m["final"]["total"],
                        "wall_s": wall,
                        "run_wall_s": m["wall_time_s"],
                        "init_s": init_s,
                        "steps": m["steps"],
                        "best_step": m["best_step"],
                        "curve": curve,
                        "dir": str(rd.relative_to(work)),
                    }
                    with log.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(
                        f"[bench_speech] {variant} {clip_id} seed{seed}: mrmel {s['mrmel']:.4f} "
                        f"spk {s['spk'] if s['spk'] is None else round(s['spk'], 3)} wall {wall:.0f} s",
                        flush=True,
                    )
    return 0


# -------------------------------------------------------------------------------------------- report


def _ms(v) -> str:
    v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return "–"
    return f"{np.mean(v):.4f} ± {np.std(v, ddof=1):.4f}" if len(v) > 1 else f"{v[0]:.4f}"


def time_to(curve: list, level: float) -> tuple[float, int] | None:
    """First (wall time, evaluation index) at which the running best mrmel (by the run's objective)
    is ≤ ``level``."""
    best_obj, best_mel = math.inf, math.inf
    for i, (t, mel, obj) in enumerate(curve):
        if obj < best_obj:  # the exported codes are the best by the objective, not by mrmel
            best_obj, best_mel = obj, mel
        if best_mel <= level:
            return t, i
    return None


def cmd_report(args) -> int:
    import pandas as pd

    out = Path(args.out)
    runs = [json.loads(x) for x in (out / "runs.jsonl").read_text().splitlines()]
    refs = {r["clip"]: r for r in map(json.loads, (out / "references.jsonl").read_text().splitlines())}
    df = pd.DataFrame(runs)
    keys = ["mrmel", "mrstft", "spk", "env", "code_sem", "code_ac", "si_sdr", "wall_s"]
    lines = [
        "# Speech benchmark on the proxy codec",
        "",
        f"Runs: {len(df)} ({', '.join(f'{v}: {n}' for v, n in df.variant.value_counts().items())}). "
        "Settings: `experiments/bench_speech.yaml` (crop, steps, seeds, overrides); one line per run in "
        "`runs.jsonl` (curves included), encoder references in `references.jsonl`. Means ± sample std over all (clip, seed) runs of a variant; lower is better for "
        "mrmel / mrstft, higher for spk / env. spk = resemblyzer GE2E cosine (*self-graded* for runs "
        "whose loss has `spk`: same weights). SI-SDR is meaningless on the proxy (untrained phase).",
        "",
        "## Means per variant",
        "",
        "| variant | n | " + " | ".join(keys) + " |",
        "|---|--:|" + "--:|" * len(keys),
    ]
    for v, g in df.groupby("variant", sort=False):
        flag = " (spk self-graded)" if g.self_graded.any() else ""
        lines.append(f"| `{v}`{flag} | {len(g)} | " + " | ".join(_ms(g[k].tolist()) for k in keys) + " |")
    enc = [refs[c] for c in df["clip"].unique() if c in refs]
    lines.append(
        f"| *encoder codes* | {len(enc)} | "
        + " | ".join(_ms([r[k] for r in enc]) if k in enc[0] and k != "wall_s" else "–" for k in keys)
        + " |"
    )
    # speaker ceiling: another recording of the same speaker (first crop_s seconds of both)
    ceil = same_speaker_ceiling(
        Path(args.clips), list(dict.fromkeys(df["clip"])), float(load_plan(args.plan)["crop_s"])
    )
    if ceil:
        lines.append(
            f"| *same speaker, other recording (spk ceiling)* | {len(ceil)} | – | – | "
            f"{_ms([v for _, v in ceil.values()])} | – | – | – | – | – |"
        )
        lines += ["", "Same-speaker pairs: " + ", ".join(f"{c} ↔ {o} {v:.3f}" for c, (o, v) in ceil.items()) + "."]
    # per clip: variant means over seeds
    lines += ["", "## Per clip (mrmel mean ± sample std over seeds / spk mean)", ""]
    clips = list(dict.fromkeys(df["clip"]))
    lines.append("| variant | " + " | ".join(clips) + " |")
    lines.append("|---|" + "--:|" * len(clips))
    for v, g in df.groupby("variant", sort=False):
        cells = []
        for c in clips:
            h = g[g["clip"] == c]
            sd = f" ± {h.mrmel.std(ddof=1):.4f}" if len(h) > 1 else ""
            cells.append("–" if h.empty else f"{h.mrmel.mean():.4f}{sd} / {h.spk.mean():.3f}")
        lines.append(f"| `{v}` | " + " | ".join(cells) + " |")
    lines.append(
        "| *encoder codes* | " + " | ".join(f"{refs[c]['mrmel']:.4f} / {refs[c]['spk']:.3f}" for c in clips) + " |"
    )
    # goals: vs the encoder, paired differences against a baseline variant, time to the recipe's quality
    summary: dict = {"variants": {}}
    lines += ["", "## Against the encoder's codes (per run: inversion better on the metric?)", ""]
    lines.append("| variant | mrmel better | spk better |")
    lines.append("|---|--:|--:|")
    for v, g in df.groupby("variant", sort=False):
        mb = [r.mrmel < refs[r.clip]["mrmel"] for r in g.itertuples()]
        sb = [r.spk > refs[r.clip]["spk"] for r in g.itertuples() if r.spk is not None]
        lines.append(f"| `{v}` | {sum(mb)}/{len(mb)} | {sum(sb)}/{len(sb)} |")
        summary["variants"][v] = {
            "n": len(g),
            **{
                k: [float(np.mean(g[k].dropna())), float(np.std(g[k].dropna(), ddof=1)) if len(g) > 1 else 0.0]
                for k in keys
            },
            "beats_encoder_mrmel": [int(sum(mb)), len(mb)],
            "beats_encoder_spk": [int(sum(sb)), len(sb)],
        }
    base = args.baseline
    if base in set(df.variant):
        lines += ["", f"## Paired differences against `{base}` (same clip and seed; mean ± std, wins)", ""]
        lines.append("| variant | n | Δ mrmel | Δ spk | Δ wall s | mrmel wins |")
        lines.append("|---|--:|--:|--:|--:|--:|")
        b = df[df.variant == base].set_index(["clip", "seed"])
        for v, g in df.groupby("variant", sort=False):
            if v == base:
                continue
            g = g.set_index(["clip", "seed"])
            idx = g.index.intersection(b.index)
            if len(idx) == 0:
                continue
            d = {k: (g.loc[idx, k] - b.loc[idx, k]).astype(float) for k in ("mrmel", "spk", "wall_s")}
            wins = int((d["mrmel"] < 0).sum())
            lines.append(
                f"| `{v}` | {len(idx)} | {_ms(d['mrmel'].tolist())} | {_ms(d['spk'].dropna().tolist())} | "
                f"{_ms(d['wall_s'].tolist())} | {wins}/{len(idx)} |"
            )
    if args.recipe in set(df.variant):
        lines += ["", f"## Time to `{args.recipe}`'s final quality (same clip and seed)", ""]
        lines.append(
            "| variant | n | reached | wall speed-up, median (recipe's wall / wall to reach) "
            "| step speed-up, median (recipe's steps / steps to reach) | ends better |"
        )
        lines.append("|---|--:|--:|--:|--:|--:|")
        rec = df[df.variant == args.recipe].set_index(["clip", "seed"])
        for v, g in df.groupby("variant", sort=False):
            if v == args.recipe:
                continue
            sp, ssp, better, n = [], [], 0, 0
            for r in g.itertuples():
                if (r.clip, r.seed) not in rec.index:
                    continue
                n += 1
                ref = rec.loc[(r.clip, r.seed)]
                hit = time_to(r.curve, float(ref.mrmel))
                if hit is not None:  # both times on the same clock: init + optimisation seconds
                    t, i = hit
                    sp.append(float(ref.curve[-1][0]) / max(t, 1e-3))
                    step = i * r.steps / (len(r.curve) - 1)  # evaluations are evenly spaced from step 0
                    ssp.append(float(ref.steps) / max(step, 1.0))
                better += int(r.mrmel < ref.mrmel)
            if n:
                med = f"{np.median(sp):.1f}×" if sp else "–"
                smed = f"{np.median(ssp):.1f}×" if ssp else "–"
                lines.append(f"| `{v}` | {n} | {len(sp)}/{n} | {med} | {smed} | {better}/{n} |")
                summary["variants"][v]["vs_recipe"] = {
                    "reached": len(sp),
                    "n": n,
                    "wall_speedups": sp,
                    "step_speedups": ssp,
                    "ends_better": better,
                }
    lines += early_stop_section(df, args.patience, args.min_rel_delta)
    plot = plot_curves(df, out / "curves.png", refs)
    if plot:
        lines += [
            "",
            "## Quality vs time",
            "",
            f"![mrmel vs wall time]({plot.name}) — mean over runs of the "
            "best-so-far mrmel (by the run's objective) at each evaluation; x = init + optimisation seconds.",
        ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(lines))
    return 0


def early_stop_section(df, patience: int, min_rel_delta: float) -> list[str]:
    """Replays ``callbacks.early_stop`` (voxinv.invert.callbacks.EarlyStop) on the recorded curves: where each run would
    have stopped, what its exported mrmel would have been, and the time it saves (simulated, not run)."""
    from voxinv.invert.callbacks import evals_since_improvement

    out = [
        "",
        f"## Early stop replayed on the curves (patience {patience} evaluations, min_rel_delta {min_rel_delta})",
        "",
        "| variant | n | stopped early | Δ mrmel at stop vs full run | time saved |",
        "|---|--:|--:|--:|--:|",
    ]
    for v, g in df.groupby("variant", sort=False):
        stops, dm, saved = 0, [], []
        for r in g.itertuples():
            objs = [o for _, _, o in r.curve]
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
        out.append(f"| `{v}` | {len(g)} | {stops}/{len(g)} | {_ms(dm)} | {100 * np.mean(saved):.0f} % |")
    return out


def same_speaker_ceiling(clips_dir: Path, clip_ids: list[str], seconds: float) -> dict[str, tuple[str, float]]:
    """clip → (other clip of the same speaker, resemblyzer cosine of their first ``seconds``)."""
    from voxinv.audio import read_audio

    manifest = clips_dir / "manifest.json"
    if not manifest.is_file():
        return {}
    entries = json.loads(manifest.read_text())["clips"]
    speaker = {e["id"]: e["speaker"] for e in entries}
    n = int(round(seconds * 24000))
    out = {}
    for c in clip_ids:
        other = next((e["id"] for e in entries if e["speaker"] == speaker.get(c) and e["id"] != c), None)
        if other is None:
            continue
        a = read_audio(clips_dir / f"{c}.wav", 24000)[:n].double().numpy()
        b = read_audio(clips_dir / f"{other}.wav", 24000)[:n].double().numpy()
        v = _spk(a, b)
        if v is not None:
            out[c] = (other, v)
    return out


def plot_curves(df, path: Path, refs: dict | None = None) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for v, g in df[df.tier == "core"].groupby("variant", sort=False) if "tier" in df else []:
        pts = []
        for r in g.itertuples():
            best_obj, best_mel, seq = math.inf, math.inf, []
            for t, mel, obj in r.curve:
                if obj < best_obj:
                    best_obj, best_mel = obj, mel
                seq.append((t, best_mel))
            pts.append(np.array(seq))
        n = min(len(p) for p in pts)
        arr = np.stack([p[:n] for p in pts])
        ax.plot(arr[:, :, 0].mean(0), arr[:, :, 1].mean(0), marker=".", label=f"{v} (n={len(pts)})")
    core = [refs[c]["mrmel"] for c in df[df.tier == "core"]["clip"].unique() if refs and c in refs]
    if core:
        ax.axhline(float(np.mean(core)), color="k", ls="--", lw=1, label="encoder codes (mean)")
    ax.set_xlabel("wall s (init + steps)")
    ax.set_ylabel("MR log-mel L1 (log10)")
    ax.set_xscale("symlog")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--tiers", default="", help="comma list of plan tiers (default: all, in plan order)")
    r.add_argument("--plan", type=Path, default=PLAN)
    r.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--work", default=str(REPO / "multirun" / "bench_speech"), help="run directories (not committed)")
    p = sub.add_parser("report")
    p.add_argument("--baseline", default="random_ste")
    p.add_argument("--recipe", default="recipe")
    p.add_argument("--plan", type=Path, default=PLAN)
    p.add_argument("--patience", type=int, default=3, help="early stop replayed on the curves")
    p.add_argument("--min-rel-delta", type=float, default=0.002)
    p.add_argument("--clips", default=str(REPO / "data" / "benchmarks" / "real"))
    for q in (r, p):
        q.add_argument("--out", default=str(REPO / "experiments" / "results" / "speech"))
    args = ap.parse_args(argv)
    return cmd_run(args) if args.cmd == "run" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
