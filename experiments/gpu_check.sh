#!/usr/bin/env bash
# One command that tells whether voxinv works on this GPU and how fast it is (≈ 5 min on one
# H100/H200, no network). Run from anywhere:
#
#     bash experiments/gpu_check.sh                      # CUDA; results under $OUT or experiments/results/gpu
#     GPU_CHECK_DEVICE=cpu bash experiments/gpu_check.sh # CPU dry run of the same steps, small settings
#
# What it does, each step under a time limit, a failing step recorded and the rest still run:
#   0. installs the wheels carried in .whl/ (if that folder exists) without touching the network
#   1. smoke of every entry point on the device with the default configs (trainer.deterministic=true):
#      python -m voxinv.run (tiny model: coordinate-descent init + optimisation, fp32 and bf16,
#      device=auto; model=proxy when voxinv/conf/model/proxy.yaml exists), python -m voxinv.eval on
#      the run, voxinv tts, voxinv decode
#   2. python -m pytest -m cuda tests (tests/invert/test_cuda.py: deterministic run, bf16 vs fp32, compiled ==
#      eager; test_run.py: Gumbel noise on the device, resume equals uninterrupted)
#   3. experiments/bench_invert.py (ms/step at 2/10/30 s, 1 and 16 restarts, fp32/bf16, eager and
#      compiled, coordinate descent s/frame), bench_codec.py, bench_tts.py --device cuda,
#      bench_manifest.py (target=manifest: 8 clips one per decoder call vs 8 in one call)
#   4. one summary: <out>/summary.json and <out>/summary.md (every table + each step's status/time)
#
# Environment: GPU_CHECK_DEVICE (cuda | cpu, default cuda), OUT (output root; default
# experiments/results/gpu), GPU_CHECK_PYTHON (default python).
#
# Wheels for a machine without the project's pure-Python dependencies (build them on a machine
# with network, same Python as the GPU machine, then carry .whl/ next to the repository root):
#
#     pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#         --implementation cp --dest .whl hydra-core omegaconf auraloss soundfile cffi pycparser \
#         wandb mistral-common
#     pip wheel --no-deps --wheel-dir .whl antlr4-python3-runtime==4.9.3   # sdist only upstream
#
# (torch, pytorch-lightning, torchaudio, numpy are expected on the GPU machine already.)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
PY=${GPU_CHECK_PYTHON:-python}
DEVICE=${GPU_CHECK_DEVICE:-cuda}
OUTROOT=${OUT:-$ROOT/experiments/results/gpu}
O=$OUTROOT/gpu_check
mkdir -p "$O/logs"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
export VOXINV_CACHE=${VOXINV_CACHE:-$O/cache}
export WANDB_MODE=offline HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
STATUS=$O/steps.jsonl
: >"$STATUS"
FAILED=0

step() { # step NAME LIMIT_S CMD...: run, log, record {name, rc, seconds}
  local name=$1 limit=$2
  shift 2
  local t0 rc
  t0=$(date +%s%N)
  echo "== $name" >&2
  timeout "$limit" "$@" >"$O/logs/$name.log" 2>&1
  rc=$?
  local ms dt
  ms=$((($(date +%s%N) - t0) / 1000000))
  dt=$(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))
  printf '{"step": "%s", "rc": %d, "seconds": %s}\n' "$name" "$rc" "$dt" >>"$STATUS"
  if [ "$rc" -ne 0 ]; then
    FAILED=$((FAILED + 1))
    echo "   FAILED (rc $rc, ${dt}s): tail of $O/logs/$name.log" >&2
    tail -n 5 "$O/logs/$name.log" >&2
  else
    echo "   ok (${dt}s)" >&2
  fi
  return 0
}

# ------------------------------------------------------------------------------ 0. wheels
if [ -d "$ROOT/.whl" ] && compgen -G "$ROOT/.whl/*.whl" >/dev/null; then
  step install_wheels 120 "$PY" -m pip install --no-index --find-links "$ROOT/.whl" \
    hydra-core omegaconf antlr4-python3-runtime auraloss soundfile wandb mistral-common
fi
step env 60 "$PY" -c "
import torch, pytorch_lightning as pl, hydra, auraloss
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'lightning', pl.__version__)
print('device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')
assert '$DEVICE' == 'cpu' or torch.cuda.is_available(), 'GPU_CHECK_DEVICE=$DEVICE but CUDA is not available'
"

# ------------------------------------------------------------------------------ settings
if [ "$DEVICE" = cpu ]; then # dry run: the same commands, small enough for a loaded CPU
  RUN_STEPS=3 FRAMES=3 CD=(init.sweeps=1 init.shortlist=8 init.context=4)
  BI_ARGS=(--quick)
  BI_COMPILE_ARGS=(--quick --modes module --compile false)
  BC_ARGS=(--sizes tiny --seconds 1 --backward-seconds 0.5 --repeats 1)
  BT_ARGS=(--tiny-frames 4 --real-layers 2 --real-frames 2 --prior-frames 4 --dtype fp32)
  TTS_FRAMES=4
  BM_ARGS=(--model tiny --clips 2 --seconds 0.5 --steps 2 --per-call 1 2)
else
  RUN_STEPS=100 FRAMES=125 CD=()
  BI_ARGS=(--sizes real --dtype fp32 bf16 --seconds 2 10 30 --restarts 1 16 --compile false
    --modes module bare recipe cd --cd-seconds 4 --warmup 3 --steps 10)
  BI_COMPILE_ARGS=(--sizes real --dtype fp32 bf16 --seconds 10 --restarts 1 --compile true
    --modes module --warmup 3 --steps 20)
  BC_ARGS=(--sizes tiny real --seconds 2 10 30 --backward-seconds 10 --repeats 5)
  BT_ARGS=(--dtype bf16 --real-layers 8 --real-frames 50 --prior-frames 100)
  TTS_FRAMES=50
  BM_ARGS=(--model proxy --clips 8 --seconds 10 --steps 30 --per-call 1 8)
fi
COMMON=(model=tiny target=synthetic "target.n_frames=$FRAMES" "steps=$RUN_STEPS" eval.which=[signal] overwrite=true)  # a rerun replaces its own runs

# ------------------------------------------------------------------------------ 1. entry points
step run_default 300 "$PY" -m voxinv.run "${COMMON[@]}" "device=$DEVICE" "${CD[@]}" "hydra.run.dir=$O/runs/default"
step run_bf16 300 "$PY" -m voxinv.run "${COMMON[@]}" "device=$DEVICE" init=random model.dtype=bfloat16 \
  "hydra.run.dir=$O/runs/bf16"
step run_auto 300 "$PY" -m voxinv.run "${COMMON[@]}" device=auto init=random steps=5 "hydra.run.dir=$O/runs/auto"
if [ -f "$ROOT/voxinv/conf/model/proxy.yaml" ]; then
  step run_proxy 300 "$PY" -m voxinv.run model=proxy target=synthetic "target.n_frames=$FRAMES" "steps=$RUN_STEPS" \
    "device=$DEVICE" "${CD[@]}" eval.which=[signal] overwrite=true "hydra.run.dir=$O/runs/proxy"
fi
step eval 300 "$PY" -m voxinv.eval "$O/runs/default" --which signal --out "$O/eval.json"
TINY=$("$PY" -c "
from hydra import compose, initialize_config_dir
import voxinv.run as R
from voxinv.voxtral.models import model_path
with initialize_config_dir(config_dir=R.CONF_DIR, version_base='1.3'):
    print(model_path(compose('config', overrides=['model=tiny']).model))
" 2>/dev/null | tail -n 1)
step tts 300 "$PY" -m voxinv tts --model "$TINY" --voice neutral_female --text "Hello from the GPU check." \
  --out "$O/tts.wav" --device "$DEVICE" --max-frames "$TTS_FRAMES"
step decode 120 "$PY" -m voxinv decode --model "$TINY" --codes "$O/runs/default/codes.safetensors" \
  --out "$O/decode.wav" --device "$DEVICE"

# ------------------------------------------------------------------------------ 2. tests
step pytest_cuda 400 "$PY" -m pytest -q -m cuda tests  # every cuda-marked test (test_cuda.py, resume on cuda, …)

# ------------------------------------------------------------------------------ 3. benchmarks
step bench_invert 400 "$PY" experiments/bench_invert.py --device "$DEVICE" "${BI_ARGS[@]}" --json "$O/bench_invert.json"
step bench_invert_compiled 300 "$PY" experiments/bench_invert.py --device "$DEVICE" "${BI_COMPILE_ARGS[@]}" \
  --json "$O/bench_invert_compiled.json"
step bench_codec_fp32 300 "$PY" experiments/bench_codec.py --device "$DEVICE" --dtype fp32 "${BC_ARGS[@]}" \
  --json "$O/bench_codec_fp32.json"
step bench_codec_bf16 300 "$PY" experiments/bench_codec.py --device "$DEVICE" --dtype bf16 "${BC_ARGS[@]}" \
  --json "$O/bench_codec_bf16.json"
step bench_tts 300 "$PY" experiments/bench_tts.py --device "$DEVICE" "${BT_ARGS[@]}" --json "$O/bench_tts.json"
step bench_manifest 300 "$PY" experiments/bench_manifest.py --device "$DEVICE" "${BM_ARGS[@]}" --json "$O/bench_manifest.json"

# ------------------------------------------------------------------------------ 4. summary
"$PY" - "$O" "$DEVICE" <<'EOF'
import json, sys
from pathlib import Path

o, device = Path(sys.argv[1]), sys.argv[2]
sys.path.insert(0, "experiments")
steps = [json.loads(line) for line in (o / "steps.jsonl").read_text().splitlines() if line.strip()]
out = {"device": device, "steps": steps}
md = [f"# voxinv GPU check ({device})", "", "| step | status | seconds |", "|---|---|---:|"]
md += [f"| {s['step']} | {'ok' if s['rc'] == 0 else 'FAILED rc ' + str(s['rc'])} | {s['seconds']:.1f} |" for s in steps]
for name in ("bench_invert", "bench_invert_compiled", "bench_codec_fp32", "bench_codec_bf16", "bench_tts", "bench_manifest", "eval"):
    p = o / f"{name}.json"
    if p.is_file():
        out[name] = json.loads(p.read_text())
    elif name.startswith("bench_invert") and (o / "logs" / f"{name}.log").is_file():  # timed out: rows so far
        rows = [json.loads(x) for x in (o / "logs" / f"{name}.log").read_text().splitlines() if x.startswith("{")]
        if rows:
            out[name] = {"meta": {"device": device + " (incomplete: the step stopped early)"}, "rows": rows}
for name in ("bench_invert", "bench_invert_compiled"):
    if name in out:
        from bench_invert import table

        md += ["", f"## {name} ({out[name]['meta']['device']})", "", table(out[name]["rows"])]
for name in ("bench_codec_fp32", "bench_codec_bf16"):
    if name in out:
        m = out[name]["meta"]
        md += ["", f"## {name} ({m['device']}, {m['dtype']})", "", "| codec | op | audio (s) | time (s) | × real time | peak MB |",
               "|---|---|---:|---:|---:|---:|"]
        md += [f"| {r['size']} | {r['op']} | {r['audio_s']:.1f} | {r['seconds']:.4f} | {r['x_realtime']:.1f} | {r['peak_mb']:.0f} |"
               for r in out[name]["rows"]]
if "bench_manifest" in out:  # target=manifest: N clips one per decoder call vs several per call
    md += ["", "## bench_manifest", "", "| clips per call | groups | fit wall s | run wall s | final total (mean) |", "|---:|---:|---:|---:|---:|"]
    md += [f"| {r['clips_per_call']} | {r['groups']} | {r['fit_s']} | {r['wall_s']} | {r['final_total_mean']:.4f} |"
           for r in out["bench_manifest"]["rows"]]
if "bench_tts" in out:
    md += ["", "## bench_tts", "", "```json", json.dumps(out["bench_tts"], indent=1), "```"]
runs = {}
for r in sorted((o / "runs").glob("*/metrics.json")):
    m = json.loads(r.read_text())
    runs[r.parent.name] = {k: m.get(k) for k in ("device", "steps", "wall_time_s", "best_step", "init")} | {
        "objective": m["final"]["total"], "si_sdr": m["signal"]["si_sdr"]}
out["runs"] = runs
if runs:
    md += ["", "## runs", "", "| run | device | steps | wall (s) | objective | SI-SDR (dB) |", "|---|---|---:|---:|---:|---:|"]
    md += [f"| {k} | {v['device']} | {v['steps']} | {v['wall_time_s']} | {v['objective']:.4f} | {v['si_sdr']:.2f} |"
           for k, v in runs.items()]
(o / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
(o / "summary.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
EOF
echo "gpu_check: $FAILED step(s) failed; summary in $O/summary.md and $O/summary.json" >&2
[ "$FAILED" -eq 0 ]
