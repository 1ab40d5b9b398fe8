#!/usr/bin/env bash
# Run the SmolLM2 grid sweep (sweeps/grid-smollm2.yaml, or the file in $SWEEP) on a bare GPU machine reached through the
# `device` tool, in a few calls that each stay under its carry and time limits. Simplest: scripts/gpu_pack.sh here
# cuts the model, wheels and corpora into chunks sized for the current tree; then one call per chunk (carry
# .gpu/cII) runs `scripts/gpu_grid.sh unpack`, and the last one sets everything up. The older per-file carry,
# prepared here with scripts/gpu_carry.sh (its part sizes assume a ~38 MB tree), in the repository root there:
#   calls 1-3 (carry .gpu/gguf1 .gpu/w1 .gpu/corpora, then .gpu/gguf2, then .gpu/gguf3):
#                                                   scripts/gpu_grid.sh setup
#     (idempotent: installs the wheels, copies the corpora and the GGUF parts that this call carried;
#      once every part is there it joins them and converts the model)
#   calls 4-5 (carry .gpu/w2a, then .gpu/w2b):      scripts/gpu_grid.sh wheels   (the run's wheels, in two carries)
#   call 6:                                         scripts/gpu_grid.sh run WORKERS SECONDS
#     ($SWEEP: another sweep file; FROM_STORE="SQL condition": re-run the stored configs of those runs
#      instead of a sweep file; FORCE=1: re-run runs already in the store, e.g. the redo sweep;
#      GPUS="0 1": spread the WORKERS over these GPUs, round robin; default "0")
#   further calls while the machine is warm:        scripts/gpu_grid.sh wait SECONDS
# `run` and `wait` end by packing the new run bundles and the job logs into $OUT/grid.tgz; here,
# unpack its runs/ into data/store/runs/ and `python -m pruning compact`.
# Workers are started with setsid (they outlive one call) and stopped by PID only: a
# `pkill -f "pruning worker"` would also match this shell's own command line.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache PRUNING_LAB_DATA=/tmp/pld \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
# MODEL=gemma3-270m: the setup joins the parts of scripts/gpu_carry_gemma.sh (.gpu/gemma*) instead
MODEL=${MODEL:-smollm2-135m}
case $MODEL in
  smollm2-135m) PARTS=".gpu/gguf[0-9]*"; GG=/tmp/gg; GGUF=/tmp/gg/SmolLM2-135M-Instruct.Q4_1.gguf ;;
  gemma3-270m) PARTS=".gpu/gemma[0-9]*"; GG=/tmp/gg-gemma; GGUF=/tmp/gg-gemma/gemma3-270m.gguf ;;
  *) echo "MODEL=$MODEL: accepted smollm2-135m, gemma3-270m" >&2; exit 2 ;;
esac
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }
install_carried() {  # the wheel folders this call carried (.gpu/w1, .gpu/w2, or .gpu/w2a and .gpu/w2b in two calls)
  for w in .gpu/w1 .gpu/w2 .gpu/w2a .gpu/w2b; do
    if compgen -G "$w/*.whl" > /dev/null; then install "$w"/*.whl || return 1; fi
  done
}
have_run_wheels() {
  python3 -c "import duckdb, lm_eval, pydantic" 2>/dev/null || { echo "wheels missing: carry .gpu/w2a, then .gpu/w2b, with \`$0 wheels\`" >&2; return 1; }
}

copy_corpora() {  # the offline text files and their MANIFEST.json, when this call carried them
  mkdir -p /tmp/plcache/corpora
  if [[ -d .gpu/corpora ]]; then cp .gpu/corpora/* /tmp/plcache/corpora/; fi
}

pending() {  # queued + running jobs
  python3 -m pruning jobs --status queued,running --limit 1000 --json 2>/dev/null \
    | python3 -c "import json,sys; print(len(json.load(sys.stdin)))" 2>/dev/null || echo "?"
}

collect() {
  mkdir -p /tmp/collect/runs
  find /tmp/pld/store/runs -mindepth 1 -maxdepth 1 -newer /tmp/pld/.marker -type d -exec cp -r {} /tmp/collect/runs/ \;
  cp -r /tmp/pld/jobs /tmp/collect/ 2>/dev/null
  tar czf "$OUT/grid.tgz" -C /tmp/collect .
  python3 -m pruning jobs --limit 1000 | tail -40
}

wait_for() {  # wait until the queue is empty or $1 seconds pass, printing progress
  local end=$((SECONDS + $1))
  while (( SECONDS < end )); do
    local n; n=$(pending)
    echo "$(date +%T) pending=$n done=$(find /tmp/pld/store/runs -mindepth 1 -maxdepth 1 -newer /tmp/pld/.marker -type d | wc -l)"
    [[ "$n" == "0" ]] && break
    sleep 15
  done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  collect
}

case "${1:-}" in
  setup)
    mkdir -p "$GG" /tmp/site
    if compgen -G ".gpu/w1/*.whl" > /dev/null; then install .gpu/w1/*.whl || exit 1; fi
    copy_corpora
    for part in $PARTS/part*; do [[ -e "$part" ]] && cp "$part" "$GG/" && cp "$(dirname "$part")/NPARTS" "$GG/"; done
    [[ -f $GG/NPARTS ]] || { echo "no GGUF part of $MODEL carried yet" >&2; exit 1; }
    have=$(find "$GG" -maxdepth 1 -name 'part*' | wc -l); need=$(cat "$GG/NPARTS")
    if (( have < need )); then echo "$MODEL GGUF parts: $have of $need; carry the next one"; exit 0; fi
    cat "$GG"/part* > "$GGUF" && rm "$GG"/part*
    python3 -c "from pathlib import Path; from pruning.model.fetch import convert_gguf; print(convert_gguf(Path('$GGUF'), '$MODEL'))" \
      && echo "model ready"
    ;;
  unpack)  # chunks of scripts/gpu_pack.sh, one a call; the last one completes the set-up
    mkdir -p /tmp/chunks /tmp/site
    for d in .gpu/c[0-9]*; do [[ -d $d ]] && cp "$d"/part* "$d"/NPARTS /tmp/chunks/; done
    [[ -f /tmp/chunks/NPARTS ]] || { echo "no chunk carried: carry .gpu/c01 (scripts/gpu_pack.sh makes them)" >&2; exit 1; }
    read -r need packed < /tmp/chunks/NPARTS
    have=$(find /tmp/chunks -maxdepth 1 -name 'part*' | wc -l)
    if (( have < need )); then echo "chunks of $packed: $have of $need; carry the next one"; exit 0; fi
    rm -rf /tmp/pack && mkdir -p /tmp/pack && cat /tmp/chunks/part* | tar xf - -C /tmp/pack || exit 1
    install /tmp/pack/wheels/*.whl || exit 1
    mkdir -p /tmp/plcache/corpora && cp /tmp/pack/corpora/* /tmp/plcache/corpora/
    for gguf in /tmp/pack/gguf/*.gguf; do  # named <alias>.gguf by gpu_pack.sh
      python3 -c "import sys; from pathlib import Path; from pruning.model.fetch import convert_gguf; print(convert_gguf(Path(sys.argv[1]), Path(sys.argv[1]).stem))" "$gguf" || exit 1
    done
    have_run_wheels && echo "models ready ($packed), wheels installed"
    ;;
  run)
    workers=${2:-4}; seconds=${3:-500}
    install_carried && have_run_wheels || exit 1
    [[ -d /tmp/pld ]] || { cp -r data /tmp/pld && touch /tmp/pld/.marker; }
    if [[ -n "${FROM_STORE:-}" ]]; then
      python3 -m pruning sweep --from-store "$FROM_STORE" --yes ${FORCE:+--force} || exit 1
    else
      python3 -m pruning sweep --config "${SWEEP:-sweeps/grid-smollm2.yaml}" --yes ${FORCE:+--force} || exit 1
    fi
    threads=$(( $(nproc) / workers )); (( threads < 1 )) && threads=1
    read -r -a gpus <<< "${GPUS:-0}"
    for i in $(seq "$workers"); do
      gpu=${gpus[$(( (i - 1) % ${#gpus[@]} ))]}
      OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads setsid python3 -m pruning worker --gpus "$gpu" --once --poll 1 \
        > "/tmp/worker$i.log" 2>&1 < /dev/null &
      echo $! >> /tmp/worker.pids
    done
    wait_for "$seconds"
    ;;
  wait)
    wait_for "${2:-500}"
    ;;
  wheels)
    install_carried && python3 -c "import duckdb, lm_eval; print('duckdb and lm_eval importable')" 2>/dev/null \
      || echo "installed what this call carried; carry the other wheel folder next"
    ;;
  stop)
    xargs -r kill < /tmp/worker.pids; collect
    ;;
  *)
    echo "usage: $0 unpack | setup | wheels | run [WORKERS] [SECONDS] | wait [SECONDS] | stop" >&2; exit 2
    ;;
esac
