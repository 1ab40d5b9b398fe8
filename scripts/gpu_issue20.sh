#!/usr/bin/env bash
# Issue 20 measurements on one H200 (placement + prefetch, faster SparseGPT, 70B shape streamed), in one
# detached batch of about 11 minutes of GPU time. In the repository root on the GPU machine:
#   scripts/gpu_issue20.sh start      # launches `run` with setsid/nohup (logs in /tmp/issue20), returns at once
#   scripts/gpu_issue20.sh collect    # copies /tmp/issue20 (JSON, RESULTS.gpu.md, logs) to $OUT/issue20; says if done
# Here, afterwards:  .venv/bin/python -m bench.merge_results <files_at>/issue20/RESULTS.gpu.md
# CPU check of every step with tiny shapes (no GPU needed):  PY=.venv/bin/python scripts/gpu_issue20.sh smoke
# Python is $PY (default python3: the machine's torch + transformers; no duckdb/streamlit needed).
set -uo pipefail
PY=${PY:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

step() {  # step NAME COMMAND...: run it, log to $res/NAME.log ($res: the caller's results dir), record rc and seconds
  local name=$1; shift; echo "=== $(date +%T) $name: $*"; local t0=$SECONDS
  "$@" > "$res/$name.log" 2>&1; local rc=$?
  echo "=== $(date +%T) $name rc=$rc $((SECONDS - t0)) s"; tail -n 25 "$res/$name.log"
  echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - t0))}" >> "$res/steps.jsonl"
}

steps() {  # $1 = device, $2 = results dir, $3 = "tiny" or ""
  local dev=$1 res=$2 tiny=${3:-}
  export BENCH_RESULTS_PATH=$res/RESULTS.gpu.md
  local shape=() l70=(--dir /tmp/issue20-l70) prof=() ref_layers=(--layers 4)
  if [[ -n $tiny ]]; then
    shape=(--layers 2 --hidden 128 --intermediate 344 --heads 4 --vocab 500 --nsamples 2 --seqlen 32 --dtype float32)
    l70=(--tiny --dir "$res/l70"); prof=(--tiny); ref_layers=()
  fi
  [[ $dev == cuda ]] && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv > "$res/nvidia-smi.csv" 2>&1
  # (d) the placement decision for the 7B shape, printed (auto: measured free memory), Wanda run with it
  step wanda_auto $PY bench/prune.py --device "$dev" --placement auto --methods wanda --sparsity 0.7 "${shape[@]}" \
    --section prune_speed_i20_wanda_auto --json "$res/wanda_auto.json"
  grep -h "placement" "$res/wanda_auto.log" | head -3 > "$res/placement_decision.txt"
  # (a) Wanda 7B: whole model on the GPU, offload with prefetch, offload without prefetch (old path)
  step wanda_gpu $PY bench/prune.py --device "$dev" --placement gpu --methods wanda --sparsity 0.7 "${shape[@]}" \
    --section prune_speed_i20_wanda_gpu --json "$res/wanda_gpu.json"
  step wanda_prefetch $PY bench/prune.py --device "$dev" --placement offload --methods wanda --sparsity 0.7 "${shape[@]}" \
    --section prune_speed_i20_wanda_offload_prefetch --json "$res/wanda_prefetch.json"
  step wanda_offload_old $PY bench/prune.py --device "$dev" --placement offload --no-prefetch --methods wanda --sparsity 0.7 \
    "${shape[@]}" --section prune_speed_i20_wanda_offload_old --json "$res/wanda_offload_old.json"
  # (b) SparseGPT 7B offload: new kernel (all 32 blocks), old kernel (4 blocks, est_32_blocks_s extrapolates), profile
  step sparsegpt_new $PY bench/prune.py --device "$dev" --placement offload --methods sparsegpt --sparsity 0.7 "${shape[@]}" \
    --section prune_speed_i20_sparsegpt_new --json "$res/sparsegpt_new.json"
  step sparsegpt_old $PY bench/prune.py --device "$dev" --placement offload --no-prefetch --sparsegpt-kernel reference \
    --methods sparsegpt --sparsity 0.7 "${shape[@]}" "${ref_layers[@]}" --section prune_speed_i20_sparsegpt_old \
    --json "$res/sparsegpt_old.json"
  step sparsegpt_profile $PY bench/sparsegpt_profile.py --device "$dev" "${prof[@]}" --json "$res/sparsegpt_profile.json"
  # (c) LLaMA-70B shape, 8 blocks written as shards, streamed: Wanda and SparseGPT
  step llama70b $PY bench/llama70b_shape.py --device "$dev" "${l70[@]}" --json "$res/llama70b_shape.json"
  rm -rf /tmp/issue20-l70
}

prefetch_steps() {  # the staged copies of pruning.model.prefetch against the model on the GPU: $1 = results dir
  local res=$1
  export BENCH_RESULTS_PATH=$res/RESULTS.gpu.md
  step cuda_tests $PY -m pytest -q -p no:cacheprovider tests/test_prefetch_cuda.py
  local w=(--methods wanda --sparsity 0.7)
  step wanda_gpu $PY bench/prune.py --device cuda --placement gpu "${w[@]}" --section prune_speed_i20b_wanda_gpu \
    --json "$res/wanda_gpu.json"
  step wanda_staged $PY bench/prune.py --device cuda --placement offload "${w[@]}" \
    --section prune_speed_i20b_wanda_staged --json "$res/wanda_staged.json"
  # (the pinned-homes copier it was compared with, 27.3 s, was removed after commit 85c59e5)
  step sparsegpt_staged $PY bench/prune.py --device cuda --placement offload --methods sparsegpt \
    --sparsity 0.7 --section prune_speed_i20b_sparsegpt_staged --json "$res/sparsegpt_staged.json"
  step sparsegpt_gpu $PY bench/prune.py --device cuda --placement gpu --methods sparsegpt \
    --sparsity 0.7 --section prune_speed_i20b_sparsegpt_gpu --json "$res/sparsegpt_gpu.json"
}

case "${1:-}" in
  prefetch)  # detached like start; results in /tmp/issue20b; collect with: collect b
    mkdir -p /tmp/issue20b; rm -f /tmp/issue20b/DONE
    setsid nohup bash -c "source '$0' lib; prefetch_steps /tmp/issue20b; date -u +%FT%TZ > /tmp/issue20b/DONE" \
      > /tmp/issue20b/run.log 2>&1 < /dev/null &
    echo "started pid $!; then: $0 collect b"
    ;;
  lib) ;;
  start)
    mkdir -p /tmp/issue20
    if [[ -f /tmp/issue20/pid ]] && kill -0 "$(cat /tmp/issue20/pid)" 2>/dev/null; then
      echo "already running (pid $(cat /tmp/issue20/pid))"; exit 0
    fi
    rm -f /tmp/issue20/DONE
    setsid nohup bash "$0" run > /tmp/issue20/run.log 2>&1 < /dev/null &
    echo $! > /tmp/issue20/pid
    echo "started pid $! ; log /tmp/issue20/run.log ; then: $0 collect"
    ;;
  run)
    steps cuda /tmp/issue20
    date -u +%FT%TZ > /tmp/issue20/DONE
    ;;
  collect)  # collect [b]: /tmp/issue20 or /tmp/issue20b
    : "${OUT:?OUT must be set (the output folder of the device tool)}"
    src=/tmp/issue20${2:-}
    mkdir -p "$OUT/issue20${2:-}"
    cp -r "$src/." "$OUT/issue20${2:-}/" 2>/dev/null
    rm -rf "$OUT/issue20/l70"
    if [[ -f $src/DONE ]]; then echo "done at $(cat "$src/DONE")"; else echo "still running"; fi
    tail -n 40 "$src/run.log"
    ;;
  smoke)
    res=${2:-/tmp/issue20-smoke}; rm -rf "$res"; mkdir -p "$res"
    steps cpu "$res" tiny
    fails=$(grep -c '"rc": [1-9]' "$res/steps.jsonl"); echo "smoke: $fails failed step(s); results in $res"
    [[ $fails == 0 ]]
    ;;
  *)
    echo "usage: $0 start | collect | smoke [DIR]   (run = what start launches)" >&2; exit 2
    ;;
esac
