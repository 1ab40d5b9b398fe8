#!/usr/bin/env bash
# Issue 26/28 GPU batch on one H200 reached through the `device` tool: the warm-runner benchmark (bench/warm_sweep.py:
# the same 24-run sweep with warm runners and with `worker --cold`, each on a fresh store and cache) for SmolLM2-135M
# and Gemma3-270m, then the allocation study of Gemma3-270m (validation -> choose -> final, scripts/gpu_study.sh
# driver) and the rest of SmolLM2's, all through warm runners. Set-up first, here:
#   scripts/gpu_carry.sh; MODELS="smollm2-135m gemma3-270m" scripts/gpu_pack.sh       (.gpu/c01..cNN)
# there, one call per chunk, back to back in one message (a machine idle for 30 s is given back), carrying .gpu/cII:
#   scripts/gpu_grid.sh unpack            (the last one joins, installs the wheels, converts both GGUFs)
# then:
#   scripts/gpu_warm.sh start [WORKERS]   the driver, detached (setsid); returns at once
#   scripts/gpu_warm.sh collect           $OUT/warm.tgz: bench JSON + RESULTS sections, the study's new run bundles,
#                                         job logs, choices, table; prints the driver's phase
# Here, afterwards: scripts/gpu_merge.sh PATH/warm.tgz for the study's runs; bench/merge_results.py for the sections.
# PHASES (default "smol-bench gemma-bench gemma-study smol-study") picks and orders the phases; also precision,
# bf16-bench, smol-sensitivity and gemma-sensitivity (issue 28: sweeps/study-sensitivity-MODEL.yaml) and
# evopress-trial (issue 31: sweeps/evopress-trial-smollm2-135m.yaml), each into the study's store.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
  TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
W=/tmp/warm
export BENCH_RESULTS_PATH=$W/RESULTS.md  # the tree is replaced at every call; results live outside it

bench() {  # $1 model
  echo "bench-$1" > $W/PHASE
  echo "=== $(date +%T) bench $1 ($WORKERS workers)"
  python3 -m bench.warm_sweep --model "$1" --device cuda --workers "$WORKERS" --runs 24 --cal-batch 8 \
    --root "/tmp/ws-$1" --json "$W/warm_sweep-$1.json" > "$W/bench-$1.log" 2>&1
  echo "=== $(date +%T) bench $1 done (exit $?)"; tail -n 30 "$W/bench-$1.log"
}

study() {  # $1 model
  echo "study-$1" > $W/PHASE
  echo "=== $(date +%T) study $1"
  mkdir -p "$W/study-$1"
  if [[ ! -d /tmp/pld ]]; then  # the chunk calls carry a tree without data/; a later call brings it
    for _ in $(seq 60); do [[ -d data/store/runs ]] && break; sleep 5; done
    cp -r data /tmp/pld && touch /tmp/pld/.marker || { echo "no data/ in the tree: study skipped"; return 1; }
  fi
  S="$W/study-$1" WORKERS=$WORKERS PRUNING_LAB_DATA=/tmp/pld bash $W/bin/gpu_study.sh driver "$1" > "$W/study-$1.log" 2>&1
  echo "=== $(date +%T) study $1 done (exit $?)"; tail -n 5 "$W/study-$1.log"
}

precision() {  # sweeps/precision-smollm2-135m.yaml (bf16 copies of six final cells + dense) on a store of its own
  echo "precision" > $W/PHASE
  echo "=== $(date +%T) precision"
  mkdir -p /tmp/pld-prec && touch /tmp/pld-prec/.marker
  export PRUNING_LAB_DATA=/tmp/pld-prec
  python3 -m pruning sweep --config sweeps/precision-smollm2-135m.yaml --yes > $W/precision.log 2>&1
  local pids=()
  for i in $(seq 7); do python3 -m pruning worker --gpus 0 --once --poll 0.5 >> $W/precision.log 2>&1 < /dev/null & pids+=($!); done
  wait "${pids[@]}"
  unset PRUNING_LAB_DATA
  echo "=== $(date +%T) precision done"
}

queue_sweep() {  # $1 phase name, $2 sweep file: its runs into the study's store, WORKERS workers until the queue is empty
  echo "$1" > $W/PHASE
  echo "=== $(date +%T) $1"
  if [[ ! -d /tmp/pld ]]; then
    for _ in $(seq 60); do [[ -d data/store/runs ]] && break; sleep 5; done
    cp -r data /tmp/pld && touch /tmp/pld/.marker || { echo "no data/ in the tree: $1 skipped"; return 1; }
  fi
  PRUNING_LAB_DATA=/tmp/pld python3 -m pruning sweep --config "$2" --yes > "$W/$1.log" 2>&1
  local pids=()
  for i in $(seq "$WORKERS"); do
    PRUNING_LAB_DATA=/tmp/pld python3 -m pruning worker --gpus 0 --once --poll 0.5 >> "$W/$1.log" 2>&1 < /dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  echo "=== $(date +%T) $1 done"
}

bench_bf16() {
  echo "bench-bf16" > $W/PHASE
  echo "=== $(date +%T) bench bf16 ($WORKERS workers)"
  python3 -m bench.warm_sweep --model smollm2-135m --device cuda --dtype bfloat16 --workers "$WORKERS" --runs 24 \
    --cal-batch 8 --modes warm --root /tmp/ws-bf16 --json "$W/warm_sweep-bf16.json" > "$W/bench-bf16.log" 2>&1
  echo "=== $(date +%T) bench bf16 done (exit $?)"; tail -n 30 "$W/bench-bf16.log"
}

driver() {
  pgrep -x nvidia-cuda-mps-control > /dev/null || nvidia-cuda-mps-control -d || echo "MPS did not start"
  for phase in ${PHASES:-smol-bench gemma-bench gemma-study smol-study}; do
    case $phase in
      smol-bench) bench smollm2-135m ;;
      gemma-bench) bench gemma3-270m ;;
      gemma-study) study gemma3-270m ;;
      smol-study) study smollm2-135m ;;
      precision) precision ;;
      smol-sensitivity) queue_sweep sensitivity-smollm2-135m sweeps/study-sensitivity-smollm2-135m.yaml ;;
      gemma-sensitivity) queue_sweep sensitivity-gemma3-270m sweeps/study-sensitivity-gemma3-270m.yaml ;;
      evopress-trial) queue_sweep evopress-trial sweeps/evopress-trial-smollm2-135m.yaml ;;
      bf16-bench) bench_bf16 ;;
      *) echo "unknown phase $phase" ;;
    esac
  done
  echo done > $W/PHASE
  date -u +%FT%TZ > $W/DONE
}

collect() {
  : "${OUT:?OUT must be set (the output folder of the device tool)}"
  rm -rf /tmp/collect && mkdir -p /tmp/collect/runs
  for d in /tmp/pld /tmp/pld-prec; do
    [[ -f $d/.marker ]] && find $d/store/runs -mindepth 1 -maxdepth 1 -newer $d/.marker -type d -exec cp -r {} /tmp/collect/runs/ \;
  done
  cp -r /tmp/pld-prec/jobs /tmp/collect/jobs-precision 2>/dev/null
  [[ -d /tmp/ws-bf16/warm/data ]] && cp -r /tmp/ws-bf16/warm/data /tmp/collect/ws-bf16-data
  cp -r /tmp/pld/jobs /tmp/collect/ 2>/dev/null
  rsync -a --exclude '*.pt' $W/ /tmp/collect/warm/ 2>/dev/null || cp -r $W /tmp/collect/warm
  for m in smollm2-135m gemma3-270m; do  # the bench's worker and job logs (not its run bundles)
    [[ -d /tmp/ws-$m ]] && (cd /tmp/ws-$m && find . -name '*.log' -o -name 'log.txt' | tar cf - -T - 2>/dev/null) \
      | (mkdir -p /tmp/collect/ws-$m && tar xf - -C /tmp/collect/ws-$m)
  done
  tar czf "$OUT/warm.tgz" -C /tmp/collect .
  echo "new study runs: $(ls /tmp/collect/runs | wc -l); phase: $(cat $W/PHASE 2>/dev/null); $(du -h $OUT/warm.tgz | cut -f1)"
  [[ -f $W/DONE ]] && echo "done at $(cat $W/DONE)" || echo "still running"
  tail -n 25 $W/driver.log
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
}

case "${1:-}" in
  start)
    export WORKERS=${2:-8}
    mkdir -p $W/bin
    if [[ -f $W/pid ]] && kill -0 "$(cat $W/pid)" 2>/dev/null; then echo "already running"; exit 0; fi
    cp scripts/gpu_warm.sh scripts/gpu_study.sh $W/bin/  # later calls replace the tree under a running script
    setsid nohup bash $W/bin/gpu_warm.sh driver > $W/driver.log 2>&1 < /dev/null &
    echo $! > $W/pid
    echo "started driver pid $! with $WORKERS workers; phases ${PHASES:-smol-bench gemma-bench gemma-study smol-study}"
    ;;
  stop)  # the driver, benchmarks, workers and runners (patterns live here, not on a command line they would match)
    pkill -f "gpu_warm.sh driver"; pkill -f "bench.warm_sweep"; pkill -f "pruning worker"; pkill -f "pruning.jobs.runner"
    sleep 3; echo "stopped" ;;
  one)  # one worker, warm then cold, 8 runs: the per-run cost without 8 processes sharing the GPU
    python3 -m bench.warm_sweep --model "${2:-smollm2-135m}" --device cuda --workers 1 --runs 8 --cal-batch 8 \
      --root "/tmp/ws-one-${2:-smollm2-135m}" --json "$W/one-${2:-smollm2-135m}.json" > "$W/one-${2:-smollm2-135m}.log" 2>&1
    tail -n 25 "$W/one-${2:-smollm2-135m}.log" ;;
  driver) driver ;;
  collect) collect ;;
  *) echo "usage: $0 start [WORKERS] | collect" >&2; exit 2 ;;
esac
