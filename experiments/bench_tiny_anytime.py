"""Anytime check on generated tiny checkpoints: does the default reach the public recipe's *final*
quality ≥ 10× sooner? (the measurement of the speech benchmark's item 5, on tiny decoders).

For each tiny checkpoint seed (``model.tiny_seed``: a different random decoder each) and run seed, a 2-s synthetic target (25 frames) is inverted by the defaults and by ``experiment=seed_recipe``
with the same step budget, back to back, one torch thread. Speed-up = the recipe's CPU seconds for all
its steps / the default's CPU seconds until its exported codes reach the recipe's final log-mel distance
(both without the evaluations; :func:`voxinv.eval.report.bench.time_to`). Also reported: whether the
default ends better (log-mel, SI-SDR: on tiny decoders the phase is meaningful) and the step ratio.

    python experiments/bench_tiny_anytime.py --json experiments/results/bench/tiny_anytime.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speech import history_curve, run_overrides  # noqa: E402  (sibling script)

CONFIGS = {"default": [], "recipe": ["experiment=seed_recipe"]}


def run_one(overrides: list[str], out: Path) -> dict:
    m = run_overrides(overrides, out)
    if m.get("stopped"):
        raise SystemExit(f"bench_tiny_anytime: error: {out}: {m['stopped']}")
    return m


def main(argv: list[str] | None = None) -> int:
    from voxinv.eval.report.bench import _opt_curve, time_to

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny-seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--eval-every", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    common = ["model=tiny", "target=synthetic", "target.n_frames=25", "device=cpu", f"steps={args.steps}"]
    common += [f"eval_every={args.eval_every}", "checkpoint_every=1000000", "eval.which=[]", "logger=csv"]
    common += ["trainer.enable_progress_bar=false", "callbacks.early_stop.patience=0"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_tiny_anytime_") as tmp:
        for ts in args.tiny_seeds:
            for seed in args.seeds:
                res = {}
                for name, extra in CONFIGS.items():  # back to back on the same target
                    ov = [*common, f"model.tiny_seed={ts}", f"seed={seed}", *extra]
                    m = run_one(ov, Path(tmp) / f"{name}_t{ts}_s{seed}")
                    res[name] = {"curve": history_curve(m), "mel": m["signal"]["mel"], "si_sdr": m["signal"]["si_sdr"]}
                d, r = res["default"], res["recipe"]
                level = r["mel"]  # the recipe's exported codes (the best by its objective)
                hit = time_to(d["curve"], level, args.steps, "cpu")
                r_cpu = _opt_curve(r["curve"], args.steps, "cpu")[-1][0]
                row = {
                    "tiny_seed": ts,
                    "seed": seed,
                    "recipe_mel": level,
                    "recipe_cpu_s": round(r_cpu, 2),
                    "default_mel": d["mel"],
                    "default_si_sdr": d["si_sdr"],
                    "recipe_si_sdr": r["si_sdr"],
                    "reach_cpu_s": None if hit is None else round(hit[0], 2),
                    "reach_step": None if hit is None else hit[1],
                    "speedup_cpu": None if hit is None else round(r_cpu / max(hit[0], 1e-3), 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    sp = [r["speedup_cpu"] for r in rows if r["speedup_cpu"] is not None]
    print(
        f"\n{args.steps} steps, {len(rows)} targets: reached {len(sp)}/{len(rows)}, "
        f"CPU speed-up median {statistics.median(sp) if sp else float('nan'):.1f}× "
        f"[{min(sp, default=float('nan')):.1f}–{max(sp, default=float('nan')):.1f}], ≥ 10× on "
        f"{sum(s >= 10 for s in sp)}/{len(rows)}; default ends better (log-mel) on "
        f"{sum(r['default_mel'] < r['recipe_mel'] for r in rows)}/{len(rows)}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
