#!/usr/bin/env bash
# Run the issue-4 ablation sweeps (experiments/sweeps/*.yaml) on the CPU tiny proxy, then write one
# report per ablation to experiments/results/<ablation>/.
#
#   experiments/run_ablations.sh                      # all, in priority order (≈ 17 min on 2 busy cores)
#   experiments/run_ablations.sh baseline init        # only these (cd_start is added when needed)
#   SWEEPS=0 experiments/run_ablations.sh             # only rebuild the reports from existing runs
#   REPORTS=0 experiments/run_ablations.sh loss       # only run the sweeps
#
# Runs go to $VOXINV_SWEEP_ROOT (default multirun/ablations, git-ignored), one Hydra multirun directory
# per ablation (replaced when re-run); jobs run one after another in one process (basic launcher).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
export VOXINV_SWEEP_ROOT="${VOXINV_SWEEP_ROOT:-$PWD/multirun/ablations}"
PY="${PY:-python}"
RESULTS="${RESULTS:-experiments/results}"
ALL=(baseline baseline_compute init cd_start codes loss schedule codes_random loss_random schedule_random)
NEEDS_CD=" codes loss schedule "   # refine the shared coordinate-descent start: need cd_start first
todo=("$@")
[ ${#todo[@]} -eq 0 ] && todo=("${ALL[@]}")
for a in "${todo[@]}"; do
  [ -f "experiments/sweeps/$a.yaml" ] || { echo "unknown ablation '$a': choose from ${ALL[*]}" >&2; exit 2; }
done
mkdir -p "$VOXINV_SWEEP_ROOT"
log="$VOXINV_SWEEP_ROOT/timings.tsv"

if [ "${SWEEPS:-1}" != 0 ]; then
  for a in "${todo[@]}"; do
    if [[ "$NEEDS_CD" == *" $a "* ]] && [ ! -f "$VOXINV_SWEEP_ROOT/cd_start/seed2/codes.safetensors" ]; then
      echo "== $a needs the coordinate-descent starts: running cd_start first"
      t0=$(date +%s)
      "$PY" -m voxinv.run -m --config-dir experiments/sweeps --config-name cd_start
      printf 'cd_start\t%s\n' "$(( $(date +%s) - t0 ))" >>"$log"
    fi
    [ "$a" = cd_start ] && [ -f "$VOXINV_SWEEP_ROOT/cd_start/seed2/codes.safetensors" ] && continue
    echo "== sweep $a"
    rm -rf "${VOXINV_SWEEP_ROOT:?}/$a"
    t0=$(date +%s)
    "$PY" -m voxinv.run -m --config-dir experiments/sweeps --config-name "$a" || echo "!! sweep $a exited with $?"
    printf '%s\t%s\n' "$a" "$(( $(date +%s) - t0 ))" | tee -a "$log"
    n_bad=$(find "$VOXINV_SWEEP_ROOT/$a" -mindepth 1 -maxdepth 1 -type d '!' -exec test -e '{}/metrics.json' ';' -print | wc -l)
    [ "$n_bad" = 0 ] || echo "!! $a: $n_bad run(s) without metrics.json (failed: see their run.log)"
  done
fi

if [ "${REPORTS:-1}" != 0 ]; then
  for a in "${todo[@]}"; do
    case "$a" in cd_start | baseline_compute) continue ;; esac  # starts / folded into the baseline report
    [ -d "$VOXINV_SWEEP_ROOT/$a" ] || { echo "no runs for $a in $VOXINV_SWEEP_ROOT: skipped"; continue; }
    dirs=("$VOXINV_SWEEP_ROOT/$a")
    [ "$a" = baseline ] && [ -d "$VOXINV_SWEEP_ROOT/baseline_compute" ] && dirs+=("$VOXINV_SWEEP_ROOT/baseline_compute")
    # random-init runs on the same targets give the "random codes" SI-SDR that ΔSI-SDR/s starts from
    refs=()
    for r in init loss_random; do [ -d "$VOXINV_SWEEP_ROOT/$r" ] && refs+=(--reference "$VOXINV_SWEEP_ROOT/$r"); done
    # paired differences against the default config's choice in each ablation
    case "$a" in
      baseline) base=experiment=default ;; init) base=init=coord_descent ;;
      codes | codes_random) base=codes=softmax_ste ;; loss | loss_random) base=loss=stft+mel ;;
      schedule | schedule_random) base=schedule=default ;; *) base= ;;
    esac
    "$PY" -m voxinv.report "${dirs[@]}" --out "$RESULTS/$a" --title "$a" "${refs[@]}" ${base:+--baseline "$base"}
  done
fi
