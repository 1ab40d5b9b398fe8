#!/usr/bin/env bash
# Issue 20's two-GPU check on the `nvidia-h200-x2` machine: the 8 runs of sweeps/two-gpu-smollm2.yaml
# through (1) one local worker on one GPU, (2) one local worker on each of two GPUs and (3) a real
# Ray cluster of this machine (`ray start --head --num-gpus 2`, the ray backend of `pruning sweep`),
# each in its own data directory, timed from submit to the last run published.
# Needs the model set up first (scripts/gpu_grid.sh setup, calls 1-3) and the w2 wheels installed.
# Ray is not on that machine's image: scripts/gpu_ray_carry.sh (here) packs a stripped
# ray[default]==2.60.0 site (no Java jars, no rllib/llm, no dashboard web client) into two parts,
# .gpu/ray1 and .gpu/ray2, each carried by one call of `ray-setup`.
#   scripts/gpu_two_gpus.sh ray-setup          (twice: once with .gpu/ray1 carried, once with .gpu/ray2)
#   scripts/gpu_two_gpus.sh local 1|2          one worker per GPU on GPU 0, or on GPUs 0 and 1
#   scripts/gpu_two_gpus.sh ray                the Ray cluster
# Each mode writes $OUT/two_gpu_<mode>.json (wall seconds, per-job seconds, states) and prints the
# job list as `python -m pruning jobs` shows it.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 \
  NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=disabled
SWEEP=sweeps/two-gpu-smollm2.yaml
LIMIT_S=${LIMIT_S:-420}

report() {  # $1 mode, $2 data dir, $3 start epoch: a JSON summary of the jobs in $OUT
  PRUNING_LAB_DATA=$2 python3 - "$1" "$3" <<'EOF'
import json, os, subprocess, sys, time
mode, start = sys.argv[1], float(sys.argv[2])
jobs = json.loads(subprocess.run([sys.executable, "-m", "pruning", "jobs", "--limit", "100", "--json"],
                                 capture_output=True, text=True, check=True).stdout)
done = [j for j in jobs if j.get("finished_at")]
summary = {
    "mode": mode, "jobs": len(jobs), "states": {s: sum(j["state"] == s for j in jobs) for s in {j["state"] for j in jobs}},
    "wall_s": round(max((j["finished_at"] for j in done), default=time.time()) - start, 1),
    "job_s": sorted(round(j["finished_at"] - j["started_at"], 1) for j in done if j.get("started_at")),
    "gpus": os.environ.get("GPUS", ""), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
}
print(json.dumps(summary))
out = os.environ.get("OUT")
if out:
    with open(os.path.join(out, f"two_gpu_{mode}.json"), "w") as fh:
        json.dump(summary, fh, indent=1)
EOF
  PRUNING_LAB_DATA=$2 python3 -m pruning jobs --limit 20
}

fresh_data() {  # a data directory with the shipped store (for dedupe) and an empty queue
  rm -rf "$1" && mkdir -p "$1" && cp -r data/store data/reference "$1"/ 2>/dev/null; mkdir -p "$1/jobs"
}

wait_done() {  # until no job of $1 is queued or running, or $LIMIT_S
  local end=$((SECONDS + LIMIT_S)) n
  while (( SECONDS < end )); do
    n=$(PRUNING_LAB_DATA=$1 python3 -m pruning jobs ${REFRESH:+--refresh} --status queued,running --limit 1000 --json \
        | python3 -c "import json,sys; print(len(json.load(sys.stdin)))")
    echo "$(date +%T) pending=$n"
    [[ "$n" == "0" ]] && return 0
    sleep 5
  done
  return 1
}

case "${1:-}" in
  ray-setup)
    for part in .gpu/ray*/raysite.part*; do [[ -e "$part" ]] && cp "$part" /tmp/; done
    have=$(find /tmp -maxdepth 1 -name 'raysite.part*' | wc -l)
    if (( have < 2 )); then echo "ray parts: $have of 2; carry the next one"; exit 0; fi
    cat /tmp/raysite.part* > /tmp/raysite.txz && tar xJf /tmp/raysite.txz -C /tmp && rm /tmp/raysite.part* \
      && mkdir -p /tmp/raysite/ray/dashboard/client/build/static \
      && echo '<html></html>' > /tmp/raysite/ray/dashboard/client/build/index.html \
      && PYTHONPATH=/tmp/raysite:$PYTHONPATH python3 -c "import ray, ray.job_submission; print('ray', ray.__version__)"
    ;;
  local)
    n=${2:-1}; data=/tmp/pld-local$n; fresh_data "$data"
    gpus=(0); (( n == 2 )) && gpus=(0 1)
    start=$(date +%s.%N)
    PRUNING_LAB_DATA=$data python3 -m pruning sweep --config "$SWEEP" --yes || exit 1
    threads=$(( $(nproc) / ${#gpus[@]} ))
    for gpu in "${gpus[@]}"; do
      PRUNING_LAB_DATA=$data OMP_NUM_THREADS=$threads setsid python3 -m pruning worker --gpus "$gpu" --once --poll 1 \
        > "/tmp/worker-local$n-$gpu.log" 2>&1 < /dev/null &
    done
    wait_done "$data"; GPUS="${gpus[*]}" report "local$n" "$data" "$start"
    ;;
  ray)
    data=/tmp/pld-ray; fresh_data "$data"
    export PYTHONPATH=/tmp/raysite:$PYTHONPATH PRUNING_LAB_DATA=$data
    python3 -c "import sys; sys.argv = ['ray', 'start', '--head', '--num-gpus', '2', '--num-cpus', '16',
      '--dashboard-host', '127.0.0.1', '--include-dashboard', 'true', '--disable-usage-stats']
from ray.scripts.scripts import main; main()" || exit 1
    for _ in $(seq 60); do curl -sf http://127.0.0.1:8265/api/version > /dev/null && break; sleep 1; done
    start=$(date +%s.%N)
    PRUNING_LAB_RAY_PYTHON=python3 PRUNING_LAB_RAY_CODE="$PWD:/tmp/site:/tmp/raysite" \
      python3 -m pruning sweep --config "$SWEEP" --yes --backend ray --address http://127.0.0.1:8265 || exit 1
    REFRESH=1 wait_done "$data"; GPUS="0 1 (ray)" report ray "$data" "$start"
    python3 -c "import sys; sys.argv = ['ray', 'stop']
from ray.scripts.scripts import main; main()"
    ;;
  *)
    echo "usage: $0 ray-setup | local 1|2 | ray" >&2; exit 2
    ;;
esac
