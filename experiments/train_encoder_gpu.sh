#!/usr/bin/env bash
# One command on one GPU (H100/H200, no network): train the §11 encoder against the frozen proxy
# decoder with a bigger batch and more steps than the CPU run, then score it on the held-out clips.
# UNRUN: no GPU was available when this was written; the step count is sized from the proxy codec's
# own training (5 384 steps × 64 crops of 1.28 s, encoder + decoder, 7.2 min on one H200), so
# 4 000 steps × 64 crops with the decoder frozen should take ≈ 5–7 min. Check the first log lines.
# Same objective and init as the CPU run of experiments/results/encoder/README.md (softmax STE, usage 1.0 at
# its own temperature usage_tau 0.3, the default data_init: 64 crops, semantic latent coloured to the table's
# second moment: the two fixes for the index collapse); watch code/distinct in metrics.csv (the 3 000-step
# CPU run: 50–111 of 128 frames throughout; without usage_tau it fell to 3–5 by step 400).
#   experiments/train_encoder_gpu.sh [extra train_encoder overrides…]
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-outputs/train_encoder_gpu}
DATA=${DATA:-data/encoder}
if [ ! -f "$DATA/train/manifest.json" ]; then  # needs the benchmark clips + flite/espeak-ng (offline)
  [ -f data/benchmarks/real/manifest.json ] || python experiments/benchmarks/prepare_real.py --no-install
  python experiments/encoder_data.py --benchmark data/benchmarks/real/manifest.json --out "$DATA"
fi
python -m voxinv.train_encoder model=proxy device=cuda \
  "data.sources=[$DATA/train/manifest.json]" "val.sources=[$DATA/eval/manifest.json]" \
  steps=4000 batch_size=64 data.workers=4 val_every=500 checkpoint_every=500 \
  quantizer.semantic=softmax quantizer.usage=1.0 quantizer.usage_tau=0.3 optim.lr=1e-3 optim.warmup=200 \
  trainer.precision=bf16-mixed trainer.enable_progress_bar=false \
  hydra.run.dir="$OUT/train" "$@"
python experiments/encoder_eval.py --device cuda --encoder "$OUT/train/encoder.safetensors" \
  --clips "$DATA/eval/manifest.json" --methods learned,true,learned+refine,true+refine,random+refine \
  --steps 300 --seeds 0,1,2 --out "$OUT/eval" --report "$OUT/eval/report.md"
