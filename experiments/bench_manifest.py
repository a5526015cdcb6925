"""Many clips: wall time of ``target=manifest`` with one clip per decoder call against several per call.

The same N clips (real speech from ``data/benchmarks/real`` when ``make data`` ran, else synthetic
tones), the same settings, ``target.clips_per_call`` varied; the per-clip results are the same whatever
the grouping (tests/invert/test_manifest.py), so only time changes. Reported per setting: the fit
time (sum over groups of the Lightning fit: init excluded), the whole run's wall time (model load,
reads, inits, fits, exports) and the process CPU time. Early stop off and one evaluation at the end,
so every setting runs exactly ``--steps`` steps per clip.

    python experiments/bench_manifest.py --model tiny --clips 4 --seconds 2 --steps 20 --per-call 1 4
    python experiments/bench_manifest.py --model proxy --clips 4 --seconds 2 --steps 5 --per-call 1 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

REPO = Path(__file__).resolve().parents[1]


def make_clips(d: Path, n: int, seconds: float) -> tuple[Path, str]:
    """n clips of about ``seconds`` (lengths vary ±25 %, so groups pad) and their manifest."""
    real = sorted((REPO / "data" / "benchmarks" / "real").glob("*.wav"))
    rows = []
    for i in range(n):
        s = seconds * (1.0 - 0.25 * i / max(1, n - 1))
        p = d / f"clip{i}.wav"
        if real:
            x, sr = sf.read(real[i % len(real)], dtype="float32", always_2d=True)
            x = x.mean(1)[: int(sr * s)]
        else:
            sr = 24000
            t = np.arange(int(sr * s)) / sr
            x = (0.1 * np.sin(2 * np.pi * (140 + 20 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(
                np.float32
            )
        sf.write(p, x, sr)
        rows.append(p.name)
    (d / "clips.csv").write_text("path\n" + "\n".join(rows) + "\n")
    return d / "clips.csv", "real speech (data/benchmarks/real)" if real else "synthetic tones"


def run_once(manifest: Path, out: Path, model: str, steps: int, per_call: int, device: str) -> dict:
    from hydra import compose, initialize_config_dir

    from voxinv.run import CONF_DIR, run

    overrides = [
        f"model={model}",
        "target=manifest",
        f"target.path={manifest}",
        f"target.clips_per_call={per_call}",
        f"steps={steps}",
        f"eval_every={steps}",
        "callbacks.early_stop.patience=0",
        "eval.which=[]",
        "init=random",
        f"device={device}",
        "trainer.enable_progress_bar=false",
        "target.max_seconds=null",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    cpu0, t0 = time.process_time(), time.time()
    res = run(cfg, out)
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    fits = {}
    for r in res["rows"]:
        m = json.loads((out / r["run_dir"] / "metrics.json").read_text())["manifest"]
        fits[tuple(m["group"])] = (m["group_fit_s"], m["group_fit_cpu_s"])
    return {
        "clips_per_call": per_call,
        "groups": len(fits),
        "fit_s": round(sum(f[0] for f in fits.values()), 2),
        "fit_cpu_s": round(sum(f[1] for f in fits.values()), 2),
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "frames": sum(r["frames"] for r in res["rows"]),
        "final_total_mean": res["final"]["total"],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny", choices=["tiny", "proxy"])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--per-call", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        manifest, source = make_clips(Path(tmp), a.clips, a.seconds)
        for k in a.per_call:
            rows.append(run_once(manifest, Path(tmp) / f"out{k}", a.model, a.steps, k, a.device))
    head = (
        f"{a.clips} clips of {a.seconds}–{0.75 * a.seconds:.2f} s ({source}), model={a.model}, {a.steps} steps, "
        f"device={a.device}, {a.threads} thread(s), load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"\n{head}\n\n| clips per call | groups | fit wall s | fit CPU s | run wall s | run CPU s | final total (mean) |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['clips_per_call']} | {r['groups']} | {r['fit_s']} | {r['fit_cpu_s']} | {r['wall_s']} | {r['cpu_s']} | {r['final_total_mean']:.4f} |"
        )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB", file=sys.stderr)
    if a.json:
        a.json.write_text(
            json.dumps({"settings": vars(a) | {"json": str(a.json)}, "source": source, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
