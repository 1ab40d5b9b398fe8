#!/usr/bin/env bash
# The allocation study (issue 16) on a GPU machine reached through the `device` tool, detached so that it
# outlives one call: validation sweep -> hyper-parameters chosen on wiki:validation (scripts/allocation_study.py
# choose) -> final sweep with the choices (wiki test, lee, wiki_cloze; 3 calibration seeds at 70 %; lee-calibrated
# runs) -> the study table. First set the machine up: here `MODEL=... scripts/gpu_pack.sh`, there one call per
# chunk (carry .gpu/cII) of `MODEL=... scripts/gpu_grid.sh unpack` (model, wheels, corpora); then:
#   scripts/gpu_study.sh start WORKERS [MODEL]   launches the driver with setsid; returns at once
#   scripts/gpu_study.sh collect                 packs the new run bundles, job logs, choices and table into
#                                                $OUT/study.tgz and says which phase the driver is in
# GPUS="0 1" spreads the workers over both GPUs of an x2 machine (round robin). MPS=1 starts the CUDA MPS
# daemon first (used for the 2026-12-01 batches: 8 workers per GPU, 14.5-16.7 GPU-s per validation run). E2E=1 also runs
# scripts/gpu_e2e_7b.sh on the last GPU at the start (its JSON lands in the tarball's e2e/).
# Here, afterwards: unpack runs/ into data/store/runs/, `python -m pruning compact`, copy choices-*.json to docs/study/.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache PRUNING_LAB_DATA=/tmp/pld \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
S=${S:-/tmp/study}  # STUDY_DIR of one driver (scripts/gpu_warm.sh runs one per model)

pending() {  # queued + running jobs
  python3 -m pruning jobs --status queued,running --limit 5000 --json 2>/dev/null \
    | python3 -c "import json,sys; print(len(json.load(sys.stdin)))" 2>/dev/null || echo "?"
}

phase() {  # $1 = name, $2 = sweep file: submit it, run $WORKERS workers until the queue is empty
  local name=$1 sweep=$2 pids=()
  echo "$name" > $S/PHASE
  echo "=== $(date +%T) phase $name: $sweep"
  python3 -m pruning sweep --config "$sweep" --yes || { echo "sweep $sweep refused"; return 1; }
  local threads=$(( $(nproc) / WORKERS )); (( threads < 1 )) && threads=1
  read -r -a gpus <<< "${GPUS:-0}"
  for i in $(seq "$WORKERS"); do
    local gpu=${gpus[$(( (i - 1) % ${#gpus[@]} ))]}
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads python3 -m pruning worker --gpus "$gpu" --once --poll 1 \
      > "$S/worker-$name-$i.log" 2>&1 < /dev/null &
    pids+=($!)
  done
  while (( $(jobs -rp | wc -l) > 0 )); do
    echo "$(date +%T) $name pending=$(pending)"; sleep 20
  done
  wait "${pids[@]}" 2>/dev/null
  echo "=== $(date +%T) phase $name done; failed jobs: $(python3 -m pruning jobs --status failed --limit 5000 --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"
}

driver() {
  local model=$1
  python3 -c "import duckdb, lm_eval, pydantic" || { echo "run scripts/gpu_grid.sh wheels first (carry .gpu/w2a, .gpu/w2b)"; exit 1; }
  [[ -d /tmp/pld ]] || { cp -r data /tmp/pld && touch /tmp/pld/.marker; }
  if [[ -n "${E2E:-}" ]]; then
    read -r -a gpus <<< "${GPUS:-0}"
    mkdir -p $S/e2e
    (CUDA_VISIBLE_DEVICES=${gpus[-1]} OUT=$S/e2e bash scripts/gpu_e2e_7b.sh > $S/e2e/log.txt 2>&1 &)
  fi
  cp "sweeps/study-validation-$model.yaml" "$S/validation.yaml" || exit 1
  phase validation "$S/validation.yaml"
  python3 scripts/allocation_study.py choose --model "$model" --out "$S/choices-$model.json" --allow-missing --all | tee "$S/choices.md" || exit 1
  python3 scripts/allocation_study.py final --model "$model" --choices "$S/choices-$model.json" --out "$S/final.yaml" || exit 1
  phase final "$S/final.yaml"
  python3 scripts/allocation_study.py table | tee "$S/table.md"
  date -u +%FT%TZ > $S/DONE
}

collect() {
  : "${OUT:?OUT must be set (the output folder of the device tool)}"
  rm -rf /tmp/collect && mkdir -p /tmp/collect/runs
  find /tmp/pld/store/runs -mindepth 1 -maxdepth 1 -newer /tmp/pld/.marker -type d -exec cp -r {} /tmp/collect/runs/ \;
  cp -r /tmp/pld/jobs /tmp/collect/ 2>/dev/null
  cp -r $S /tmp/collect/study 2>/dev/null
  tar czf "$OUT/study.tgz" -C /tmp/collect .
  echo "runs so far: $(ls /tmp/collect/runs | wc -l); phase: $(cat $S/PHASE 2>/dev/null)"
  if [[ -f $S/DONE ]]; then echo "done at $(cat $S/DONE)"; else echo "still running"; fi
  tail -n 15 $S/driver.log
}

case "${1:-}" in
  start)
    export WORKERS=${2:-8}
    mkdir -p $S
    if [[ -f $S/pid ]] && kill -0 "$(cat $S/pid)" 2>/dev/null; then echo "already running"; exit 0; fi
    if [[ -n "${MPS:-}" ]]; then  # MPS=1: CUDA MPS, so the workers' small kernels share each GPU at once
      pgrep -x nvidia-cuda-mps-control > /dev/null || setsid nvidia-cuda-mps-control -d || echo "MPS did not start"
    fi
    setsid nohup bash "$0" driver "${3:-smollm2-135m}" > $S/driver.log 2>&1 < /dev/null &
    echo $! > $S/pid
    echo "started pid $! with $WORKERS workers on GPUs ${GPUS:-0}"
    ;;
  driver) driver "${2:-smollm2-135m}" ;;
  collect) collect ;;
  *) echo "usage: $0 start [WORKERS] [MODEL] | collect" >&2; exit 2 ;;
esac
