"""Score initialisations on held-out clips with the proxy codec: learned encoder (alone / + refinement),
the proxy's true encoder (alone / + refinement), random + refinement, seed_recipe, coordinate descent.

python experiments/encoder_eval.py --encoder outputs/train_encoder/.../encoder.safetensors \\
    --clips data/encoder/eval/manifest.json --methods learned,learned+refine,random+refine --steps 100 \\
    --seeds 0,1,2 --out outputs/encoder_eval/main --report experiments/results/encoder/main.md

Every refinement row is a ``voxinv.run`` run directory under ``--out`` (config, codes, metrics);
"alone" rows decode the encoder's codes directly (no optimisation). Metrics against the target as the
run saw it (trimmed, peak 0.08): ``mrmel`` = multi-resolution log-mel L1 in log10 units and
``env_corr`` = log-energy envelope correlation (``voxinv.voxtral.proxy``, the proxy's eval.json
definitions), ``spk_sim`` = resemblyzer GE2E cosine (self-graded only for ``seed_recipe``, whose loss
has the ``spk`` term), ``seconds`` = wall time of init + refinement (machine shared: see the report).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import voxinv.run as R
from voxinv.audio import read_audio
from voxinv.eval.metrics import speaker_similarity
from voxinv.invert.encoder_init import encoder_codec, encoder_codes
from voxinv.invert.target import build_target
from voxinv.voxtral.checkpoint import Checkpoint
from voxinv.voxtral.codec import load_codec
from voxinv.voxtral.models import model_path
from voxinv.voxtral.proxy import envelope_correlation, mr_log_mel

REFINE = {
    "learned+refine": lambda a: ["init=encoder", f"init.path={a.encoder}"],
    "true+refine": lambda a: ["init=encoder"],
    "random+refine": lambda a: ["init=random"],
    "seed_recipe": lambda a: ["+experiment=seed_recipe"],
    "coord_descent": lambda a: ["init=coord_descent", *a.cd],
}
ALONE = ("learned", "true")
DEVICE = "cpu"


def compose_cfg(clip: Path, seed: int, steps: int, extra: list[str]):
    base = [
        "model=proxy",
        "target=file",
        f"target.path={clip}",
        f"seed={seed}",
        f"steps={steps}",
        "eval.which=[]",
        "trainer.enable_progress_bar=false",
        f"device={DEVICE}",
    ]
    with initialize_config_dir(config_dir=R.CONF_DIR, version_base="1.3"):
        return compose("config", overrides=base + extra)


def scores(target: torch.Tensor, rec: torch.Tensor) -> dict:
    n = min(target.numel(), rec.numel())
    x, y = target[:n].float(), rec[:n].float()
    return {
        "mrmel": mr_log_mel(x, y),
        "env_corr": envelope_correlation(x, y),
        "spk_sim": speaker_similarity(x.numpy(), y.numpy()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", required=True, help="learned encoder.safetensors")
    ap.add_argument("--clips", default="data/encoder/eval/manifest.json")
    ap.add_argument("--ids", default="", help="comma-separated clip ids (default: all)")
    ap.add_argument("--methods", default="learned,true,learned+refine,true+refine,random+refine")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--cd", default="init.sweeps=1,init.shortlist=16,init.gn_steps=1", help="coord_descent overrides")
    ap.add_argument("--out", default="outputs/encoder_eval/run")
    ap.add_argument("--report", default=None, help="markdown table to write (rows.json beside it)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (runs and encoders)")
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device
    a.cd = [x for x in a.cd.split(",") if x]
    torch.set_num_threads(1)
    m = json.loads(Path(a.clips).read_text())
    ids = set(a.ids.split(",")) if a.ids else None
    clips = [
        (c["id"], Path(a.clips).parent / c["path"], c["speaker"]) for c in m["clips"] if ids is None or c["id"] in ids
    ]
    methods = a.methods.split(",")
    seeds = [int(s) for s in a.seeds.split(",")]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    rows_path = out / "rows.jsonl"
    done = (
        {(r["clip"], r["method"], r["seed"]) for r in map(json.loads, rows_path.open())}
        if rows_path.exists()
        else set()
    )

    ckpt = Checkpoint(model_path(compose_cfg(clips[0][1], 0, 0, []).model))
    codec = load_codec(ckpt, device=a.device)
    encoders = {
        "learned": encoder_codec(ckpt, a.encoder, device=a.device),
        "true": encoder_codec(ckpt, None, device=a.device),
    }
    for cid, path, spk in clips:
        for method in methods:
            for seed in seeds if method not in ALONE else [0]:
                if (cid, method, seed) in done:
                    continue
                if method in ALONE:
                    cfg = compose_cfg(path, seed, 0, [])
                    target = build_target(cfg.target, codec, ckpt)
                    t0 = time.time()
                    codes = encoder_codes(encoders[method], target.wav)
                    with torch.no_grad():
                        rec = codec.decode(codes.T[None].to(a.device))[0, 0].cpu()
                    row = {"seconds": time.time() - t0, "run": None}
                else:
                    cfg = compose_cfg(path, seed, a.steps, REFINE[method](a))
                    target = build_target(cfg.target, codec, ckpt)
                    run_dir = out / cid / method / f"s{seed}"
                    res = R.run(cfg, run_dir)
                    rec = read_audio(run_dir / "reconstruction.wav", codec.sampling_rate)
                    row = {
                        "seconds": res["wall_time_s"],
                        "init_seconds": res["init"].get("seconds", 0.0),
                        "steps": res["steps"],
                        "run": str(run_dir),
                    }
                row.update(
                    {
                        "clip": cid,
                        "speaker": spk,
                        "method": method,
                        "seed": seed,
                        "frames": target.n_frames,
                        **scores(target.wav, rec),
                    }
                )
                with rows_path.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    if a.report:
        report(rows_path, Path(a.report), methods)


def report(rows_path: Path, md: Path, methods: list[str]) -> None:
    rows = [json.loads(x) for x in rows_path.open()]
    md.parent.mkdir(parents=True, exist_ok=True)
    md.with_suffix(".rows.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| method | runs | clips | MR log-mel ↓ | env corr ↑ | spk sim ↑ | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for meth in methods:
        r = [x for x in rows if x["method"] == meth]
        if not r:
            continue

        def ms(k: str, r=r) -> str:
            v = [x[k] for x in r]
            return f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}"

        lines.append(
            f"| {meth} | {len(r)} | {len({x['clip'] for x in r})} | {ms('mrmel')} | {ms('env_corr')} | "
            f"{ms('spk_sim')} | {statistics.mean(x['seconds'] for x in r):.1f} |"
        )
    md.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
