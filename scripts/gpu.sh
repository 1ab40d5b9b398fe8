#!/usr/bin/env bash
# One command for a GPU batch on a bare machine reached through the `device` tool (docs/gpu.md says how to
# plan one). Verbs run HERE (this checkout) or THERE (the repository root on the GPU machine):
#
#   here   scripts/gpu.sh pack [MODEL...]   the wheels the machine lacks, the models' GGUFs, their tokenizers
#                                           as converted HERE (tok/MODEL/ with the expected fingerprint) and the
#                                           offline corpora, as one tar stream cut into .gpu/c01..cNN, each sized
#                                           to ride beside the slim tree (a call carries 64 MiB, tree included).
#                                           RAY=1 adds ray[default] (not on the machine's image). Default
#                                           models: smollm2-135m gemma3-270m.
#   here   scripts/gpu.sh slim              switch to a throw-away branch `gpu-slim` without data/ (the store
#                                           is ~35 MB of the 64): the chunk calls travel light
#   here   scripts/gpu.sh unslim            back to the branch you were on, data/ tracked again
#   there  scripts/gpu.sh unpack            one chunk per call (carry .gpu/cII); the last joins them, installs
#                                           the wheels, copies the corpora, converts every GGUF, puts the packed
#                                           tokenizer over the converted one and fails unless it fingerprints
#                                           THERE as HERE (transformers 5.17.0 made another Gemma tokenizer)
#   there  scripts/gpu.sh start [WORKERS] PHASE...   the driver, detached (setsid): phases in order
#   there  scripts/gpu.sh workers [WORKERS] PHASE    the workers PHASE would run (below), and why
#   there  scripts/gpu.sh collect           $OUT/batch.tgz: the new run bundles, job logs, bench JSON and
#                                           RESULTS sections, study choices; prints the phase and the log
#   there  scripts/gpu.sh stop              the driver, its workers and runners
#   here   scripts/gpu.sh merge PATH.tgz    the runs into data/store, the choices and final sweeps where the
#                                           repository keeps them, the bench sections into bench/RESULTS.md;
#                                           compacts and verifies the store (runs of one model with different
#                                           tokenizer fingerprints are named), prints the study table
#
# PHASES (each skips what the store already has, so a later batch resumes):
#   precision            sweeps/precision-smollm2-135m.yaml (bfloat16 twins of six float32 cells) on a store
#                        of its own; read here with `scripts/allocation_study.py precision`
#   bench:MODEL          bench/warm_sweep.py: a 24-run sweep, warm runners against `worker --cold`
#   bench-bf16           the same sweep of SmolLM2 in bfloat16, warm only
#   study:MODEL          the allocation study: validation -> choose -> final -> table
#   sensitivity:MODEL    sweeps/study-sensitivity-MODEL.yaml (one block pruned at a time)
#   sweep:FILE           any sweep file, into the study's store, WORKERS workers until its queue is empty
#   speed-7b             on a random LLaMA-7B shape: the locuslab/wanda reference beside ours (bench/reference_wanda.py,
#                        when pack found a checkout: WANDA_REF), bench/prune.py (Wanda on the GPU with the statistics
#                        pass stopped early or not, batch 1 / 8; offloaded; SparseGPT offloaded), the SparseGPT
#                        profile, operator profiles of both methods (bench/block_profile.py), the LLaMA-70B shape
#                        streamed, the CUDA tests (~10 GPU-minutes)
#   e2e-7b               one whole `pruning run` on a saved random LLaMA-7B shape (needs the SmolLM2 tokenizer)
#
# WORKERS (default 8) is an upper bound: each phase runs min(WORKERS, floor(0.85 x GPU memory / per-worker peak) x
# GPUs) workers, the GPU memory the smallest memory.total (nvidia-smi) of GPUS and the per-worker peak that of
# the phase's model in PEAK_GIB below (estimated from the 2026-12-05 logs, to measure; the largest of the phase's models). A model not in the table,
# or no nvidia-smi, keeps WORKERS (said in the phase log). On 2026-12-05, 8 Gemma3-270m workers on one 80 GB
# H100 ran 20 of 37 jobs out of memory (evaluation at batch 2 allocates 4 GiB logits chunks): Gemma now runs 6.
#
# The machine is given back 30 s after a call ends: make the chunk calls back to back (one message), the
# first one alone until a machine has started. Never `pkill -f PATTERN` on a device command line that
# contains PATTERN (it kills the call itself): `stop` holds the patterns. GPUS="0 1" spreads workers over
# GPUs (round robin); MPS (default on) lets the workers' small kernels share a GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
TMPD=""
trap '[[ -n $TMPD ]] && rm -rf "$TMPD"' EXIT
W=/tmp/batch            # THERE: the driver's files (outside the tree, which every call replaces)
# GiB of GPU memory one worker (its warm runner) may peak at, per model, measured on an H100 under MPS:
# gemma3-270m's 262k-token vocabulary makes 4 GiB logits chunks at evaluation batch 2 (runners seen at 14-16 GiB
# before they gave their cache back after each job); SmolLM2-135M stays far below.
# every run records its process's peak (env.peak_gpu_gib); `merge` prints the per-model maxima
# (pruning.store.queries.gpu_peaks): round them up here
declare -A PEAK_GIB=([gemma3-270m]=10 [smollm2-135m]=6)
GPU_SHARE_PCT=85        # of a GPU's total memory the workers may plan on (the rest: contexts, MPS, fragmentation)
STORE=/tmp/pld          # THERE: the study's store (a copy of data/ made when a phase first needs it)

# ---------------------------------------------------------------- here
download_wheels() {  # the packages the GPU image lacks, for Python 3.12 x86-64
  local dir=$1; shift
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$dir" "$@"
}

pack() {
  local models=("$@"); (( ${#models[@]} )) || models=(smollm2-135m gemma3-270m)
  grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
  mkdir -p .gpu/wheels
  if ! compgen -G ".gpu/wheels/duckdb-*.whl" > /dev/null; then
    download_wheels .gpu/wheels pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection gguf==0.19.0 \
      mwparserfromhell==0.7.2 duckdb==2.0.1 lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
      more_itertools evaluate pytablewriter || return 1
  fi
  local pack; pack=$(mktemp -d); TMPD=$pack
  mkdir -p "$pack/gguf" "$pack/wheels" "$pack/corpora" "$pack/tok"
  local cache=${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}
  for model in "${models[@]}"; do
    case $model in
      smollm2-135m|gemma3-270m) ;;
      *) echo "pack: model $model is not accepted; accepted: smollm2-135m, gemma3-270m" >&2; return 2 ;;
    esac
    # the tokenizer as converted HERE travels with its fingerprint: `unpack` installs it over the one converted
    # THERE and checks it (another transformers made another Gemma tokenizer: 155 windows of wiki against 34)
    [[ -f $cache/models/$model/config.json ]] || .venv/bin/python -m pruning fetch "$model" || return 1
    .venv/bin/python -c "import sys; from pathlib import Path; from pruning.model.fetch import pack_tokenizer; \
print(pack_tokenizer(sys.argv[1], Path(sys.argv[2])))" "$model" "$pack/tok/$model" > /dev/null || return 1
    case $model in
      smollm2-135m) ln -s "$(.venv/bin/python -c "from pruning.model.fetch import smollm2_gguf_path; print(smollm2_gguf_path())")" \
                      "$pack/gguf/$model.gguf" ;;
      gemma3-270m) .venv/bin/python -c "import sys; from pathlib import Path; from pruning.model.fetch import download_gemma3_gguf; \
                      print(download_gemma3_gguf(Path(sys.argv[1])))" "$pack/dl" > /dev/null || return 1
                   mv "$pack/dl/gemma3-270m.gguf" "$pack/gguf/$model.gguf" && rm -rf "$pack/dl" ;;
    esac
  done
  tar czf "$pack/tok.tgz" -C "$pack" tok && rm -rf "$pack/tok" || return 1  # Gemma's tokenizer.json: 33 MB, 5.6 gzipped
  ln -s "$PWD"/.gpu/wheels/*.whl "$pack/wheels/"
  if [[ -n ${RAY:-} ]]; then  # ray[default] and what it needs that the image lacks (its aiohttp, grpcio, ... are there)
    mkdir -p "$pack/ray" && python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any \
      -d "$pack/ray" "ray[default]==2.60.0" || return 1
    local present=" aiohttp aiosignal aiohappyeyeballs attrs certifi charset_normalizer click filelock frozenlist grpcio idna msgpack multidict packaging prometheus_client propcache protobuf pyyaml requests six typing_extensions urllib3 wrapt yarl "
    for f in "$pack"/ray/*.whl; do
      local name; name=$(basename "$f" | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_')
      if [[ $present == *" $name "* ]]; then rm "$f"; fi
    done
  fi
  cp "${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}"/corpora/* "$pack/corpora/"
  # the reference code for bench/reference_wanda.py (speed-7b): lib/ and LICENSE of a locuslab/wanda checkout
  local ref=${WANDA_REF:-/work/.mirror/locuslab+wanda/repo}
  if git --git-dir="$ref" rev-parse -q --verify HEAD > /dev/null 2>&1; then
    mkdir -p "$pack/wanda-ref" && git --git-dir="$ref" archive HEAD lib LICENSE | tar x -C "$pack/wanda-ref" \
      && git --git-dir="$ref" rev-parse HEAD > "$pack/wanda-ref/REVISION" || return 1
  else
    echo "pack: no locuslab/wanda checkout at $ref (WANDA_REF): speed-7b will run without the reference" >&2
  fi
  local tree untracked chunk
  tree=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
  untracked=$(git ls-files -o --exclude-standard -z | xargs -0 -r stat -c %s | awk '{s += $1} END {print s + 0}')
  chunk=$(( 64 * 1024 * 1024 - tree - untracked - 2 * 1024 * 1024 ))  # 2 MiB for the commits still to come
  (( chunk > 4 * 1024 * 1024 )) || { echo "the tree ($tree bytes) leaves no room to carry: run \`$0 slim\` first" >&2; return 1; }
  rm -rf .gpu/c[0-9]* .gpu/chunks && mkdir -p .gpu/chunks
  tar chf - -C "$pack" . | split -b "$chunk" -d -a 2 - .gpu/chunks/part
  local parts=(.gpu/chunks/part*) i
  for i in "${!parts[@]}"; do
    local dir; dir=$(printf ".gpu/c%02d" $((i + 1)))
    mkdir -p "$dir" && mv "${parts[$i]}" "$dir/" && echo "${#parts[@]} $(IFS=,; echo "${models[*]}")" > "$dir/NPARTS"
  done
  rmdir .gpu/chunks
  echo "${models[*]}: ${#parts[@]} chunks of $((chunk / 1024 / 1024)) MiB in .gpu/c01..$(printf 'c%02d' ${#parts[@]}) (tree $((tree / 1024 / 1024)) MiB)"
}

slim() {
  local branch; branch=$(git rev-parse --abbrev-ref HEAD)
  [[ $branch != gpu-slim ]] || { echo "already on gpu-slim"; return 0; }
  git diff --quiet && git diff --cached --quiet || { echo "slim: commit or stash your changes first" >&2; return 1; }
  echo "$branch" > .git/gpu-slim-from
  git branch -D -q gpu-slim 2>/dev/null
  git checkout -q -b gpu-slim && git rm -r -q --cached data && echo /data/ >> .git/info/exclude \
    && git commit -q -m "gpu-slim: the tree without data/ (scripts/gpu.sh slim)" && echo "on gpu-slim (from $branch)"
}

unslim() {
  local branch; branch=$(cat .git/gpu-slim-from 2>/dev/null || echo main)
  git checkout -q "$branch" && sed -i '/^\/data\/$/d' .git/info/exclude && git branch -D -q gpu-slim \
    && rm -f .git/gpu-slim-from && echo "back on $branch"
}

merge() {
  local tgz=${1:?usage: $0 merge PATH.tgz}
  [[ -f $tgz ]] || { echo "$tgz: no such file" >&2; return 2; }
  local py=.venv/bin/python tmp new=0 kept=0
  tmp=$(mktemp -d); TMPD=$tmp
  tar xzf "$tgz" -C "$tmp"
  for dir in "$tmp"/runs/*/; do
    [[ -d $dir ]] || continue
    local name; name=$(basename "$dir")
    if [[ -e data/store/runs/$name ]]; then kept=$((kept + 1)); continue; fi
    cp -r "$dir" "data/store/runs/$name" && new=$((new + 1))
  done
  echo "runs: $new new bundle directories merged, $kept already here"
  $py -m pruning compact
  for sdir in "$tmp"/study "$tmp"/batch/study-* "$tmp"/warm/study-*; do  # the study driver's files, per model
    [[ -d $sdir ]] || continue
    for json in "$sdir"/choices-*.json; do
      [[ -e $json ]] || continue
      local model; model=$(basename "$json" .json); model=${model#choices-}
      cp "$json" "docs/study/choices-$model.json"
      [[ -f $sdir/choices.md ]] && cp "$sdir/choices.md" "docs/study/choices-$model.md"
      echo "choices of $model -> docs/study/choices-$model.{json,md}"
    done
    if [[ -f $sdir/final.yaml ]]; then
      local model; model=$(sed -n 's/^name: study-final-//p' "$sdir/final.yaml")
      [[ -n $model ]] || { echo "$sdir/final.yaml has no 'name: study-final-MODEL' line" >&2; return 1; }
      cp "$sdir/final.yaml" "sweeps/study-final-$model.yaml" && echo "final sweep of $model -> sweeps/study-final-$model.yaml"
    fi
  done
  for results in "$tmp"/batch/RESULTS.md "$tmp"/warm/RESULTS.md; do  # bench sections written there
    [[ -f $results ]] && $py -m bench.merge_results "$results"
  done
  $py -m pruning verify --quick
  $py -c "from pruning.store.queries import gpu_peaks; p = gpu_peaks(); \
print('GPU memory per worker, measured (PEAK_GIB in scripts/gpu.sh):', 'none recorded yet' if p.empty else ''); \
print('' if p.empty else p.to_string(index=False))"
  $py -m pruning repack --dry-run
  $py scripts/allocation_study.py table | head -40
}

# ---------------------------------------------------------------- there
there_env() {
  export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 BENCH_RESULTS_PATH=$W/RESULTS.md
}

install_wheels() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$@"; }

unpack() {
  there_env
  mkdir -p /tmp/chunks /tmp/site
  local d
  for d in .gpu/c[0-9]*; do [[ -d $d ]] && cp "$d"/part* "$d"/NPARTS /tmp/chunks/; done
  [[ -f /tmp/chunks/NPARTS ]] || { echo "no chunk carried: carry .gpu/c01 (\`$0 pack\` makes them)" >&2; return 1; }
  local need packed have
  read -r need packed < /tmp/chunks/NPARTS
  have=$(find /tmp/chunks -maxdepth 1 -name 'part*' | wc -l)
  if (( have < need )); then echo "chunks of $packed: $have of $need; carry the next one"; return 0; fi
  rm -rf /tmp/pack && mkdir -p /tmp/pack && cat /tmp/chunks/part* | tar xf - -C /tmp/pack || return 1
  install_wheels /tmp/pack/wheels/*.whl || return 1
  if compgen -G "/tmp/pack/ray/*.whl" > /dev/null; then install_wheels /tmp/pack/ray/*.whl || return 1; fi
  mkdir -p /tmp/plcache/corpora && cp /tmp/pack/corpora/* /tmp/plcache/corpora/
  [[ -f /tmp/pack/tok.tgz ]] && { tar xzf /tmp/pack/tok.tgz -C /tmp/pack || return 1; }
  local gguf alias
  for gguf in /tmp/pack/gguf/*.gguf; do  # named <alias>.gguf by pack
    alias=$(basename "$gguf" .gguf)
    python3 -c "import sys; from pathlib import Path; from pruning.model.fetch import convert_gguf; \
print(convert_gguf(Path(sys.argv[1]), Path(sys.argv[1]).stem))" "$gguf" || return 1
    # the tokenizer converted HERE replaces the one converted THERE; its fingerprint must come out as packed
    [[ -f /tmp/pack/tok/$alias/tokenizer_fingerprint.txt ]] \
      || { echo "unpack: the pack holds no tokenizer of $alias (tok/$alias/): pack again with this gpu.sh" >&2; return 1; }
    python3 -c "import sys; from pathlib import Path; from pruning.model.fetch import install_tokenizer; \
print('tokenizer of', sys.argv[1], 'installed in', install_tokenizer(sys.argv[1], Path(sys.argv[2])))" \
      "$alias" "/tmp/pack/tok/$alias" || { echo "unpack: the tokenizer of $alias does not fingerprint here as packed" >&2; return 1; }
  done
  if [[ -d /tmp/pack/wanda-ref/lib ]]; then rm -rf /tmp/wanda-ref && cp -r /tmp/pack/wanda-ref /tmp/wanda-ref; fi
  python3 -c "import duckdb, lm_eval, pydantic" && echo "models ready ($packed), wheels installed"
}

sweep_models() {  # $1 sweep file: the model names of its runs, from the configs the sweep expands to
  python3 -c "import sys; from pruning.jobs.sweep import expand_sweep; \
print(' '.join(sorted({c.model.name for c in expand_sweep(sys.argv[1])})))" "$1"
}

phase_models() {  # $1 phase: the models its workers load (none for the phases without workers)
  case $1 in
    precision) sweep_models sweeps/precision-smollm2-135m.yaml ;;
    bench-bf16) echo smollm2-135m ;;
    bench:*|study:*|sensitivity:*) echo "${1#*:}" ;;
    sweep:*) sweep_models "${1#sweep:}" ;;
  esac
}

gpu_total_mib() {  # the smallest memory.total (MiB) of the GPUs in GPUS; empty without nvidia-smi or a GPU
  local gpu mib min=""
  read -r -a gpus <<< "${GPUS:-0}"
  command -v nvidia-smi > /dev/null || return 0
  for gpu in "${gpus[@]}"; do
    [[ $gpu == cpu ]] && continue
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i "$gpu" 2>/dev/null | head -n 1 | tr -dc 0-9)
    [[ -n $mib ]] || continue
    if [[ -z $min ]] || (( mib < min )); then min=$mib; fi
  done
  echo "$min"
}

cap_workers() {  # $@ models -> NW (the workers to run: WORKERS capped by memory) and NW_WHY (one line for the log)
  local model peak=0 worst="" unknown=() total ngpus=0 gpu per_gpu cap
  for model in "$@"; do
    if [[ -z ${PEAK_GIB[$model]:-} ]]; then unknown+=("$model"); continue; fi
    if (( PEAK_GIB[$model] > peak )); then peak=${PEAK_GIB[$model]}; worst=$model; fi
  done
  NW=$WORKERS
  if (( ${#unknown[@]} )); then
    NW_WHY="workers: $NW (no measured per-worker peak for ${unknown[*]}; PEAK_GIB in $0 has ${!PEAK_GIB[*]})"; return 0
  fi
  if [[ -z $worst ]]; then NW_WHY="workers: $NW (no model named: nothing to cap)"; return 0; fi
  total=$(gpu_total_mib)
  if [[ -z $total ]]; then NW_WHY="workers: $NW (no GPU memory reading from nvidia-smi for GPUS=${GPUS:-0}: not capped)"; return 0; fi
  read -r -a gpus <<< "${GPUS:-0}"
  for gpu in "${gpus[@]}"; do [[ $gpu == cpu ]] || ngpus=$((ngpus + 1)); done
  per_gpu=$(( total * GPU_SHARE_PCT / 100 / (peak * 1024) ))
  (( per_gpu >= 1 )) || per_gpu=1
  cap=$(( per_gpu * ngpus ))
  (( cap < NW )) && NW=$cap
  NW_WHY="workers: $NW of $WORKERS asked ($worst peaks at $peak GiB per worker; ${GPU_SHARE_PCT}% of $((total / 1024)) GiB holds $per_gpu per GPU, $ngpus GPU(s))"
}

need_store() {  # the study's store: a copy of the tree's data/ (a later call brings it when the chunk calls were slim)
  [[ -d $STORE ]] && return 0
  local _
  for _ in $(seq 60); do [[ -d data/store/runs ]] && break; sleep 5; done
  cp -r data $STORE && touch $STORE/.marker || { echo "no data/ in the tree: run \`$0 unslim\` here, then any call"; return 1; }
}

queue() {  # $1 phase name, $2 sweep file, $3 store: its runs, at most WORKERS workers (cap_workers) until the queue is
  # empty; then the phase's failed jobs once more (a job that found the GPU busy fails fast: DeviceMemoryBusyError)
  local name=$1 sweep=$2 store=$3 models since retry
  since=$(date +%s.%N)
  PRUNING_LAB_DATA=$store python3 -m pruning sweep --config "$sweep" --yes >> "$W/$name.log" 2>&1 \
    || { echo "sweep $sweep refused (see $W/$name.log)"; return 1; }
  models=$(sweep_models "$sweep") || { echo "sweep $sweep: its models could not be read"; return 1; }
  # shellcheck disable=SC2086  # one word per model
  cap_workers $models
  echo "$name: $NW_WHY" | tee -a "$W/$name.log"
  run_workers "$name" "$store"
  retry=$(PRUNING_LAB_DATA=$store python3 -m pruning jobs --status failed --json 2>/dev/null | python3 -c '
import json, sys
since = float(sys.argv[1])
print(" ".join(j["job_id"] for j in json.load(sys.stdin) if j["created_at"] >= since and not j.get("retry_of")))' "$since")
  [[ -n $retry ]] || return 0
  echo "$name: retrying $(wc -w <<< "$retry") failed job(s) once" | tee -a "$W/$name.log"
  local job
  for job in $retry; do PRUNING_LAB_DATA=$store python3 -m pruning retry "$job" >> "$W/$name.log" 2>&1; done
  run_workers "$name" "$store"
}

run_workers() {  # $1 phase name, $2 store: NW workers over GPUS (round robin), each until the queue is empty
  local name=$1 store=$2 pids=() i gpu
  read -r -a gpus <<< "${GPUS:-0}"
  local threads=$(( $(nproc) / NW )); (( threads < 1 )) && threads=1
  for i in $(seq "$NW"); do
    gpu=${gpus[$(( (i - 1) % ${#gpus[@]} ))]}
    local where=(--gpus "$gpu"); [[ $gpu == cpu ]] && where=()  # GPUS=cpu: a CPU check of the driver
    PRUNING_LAB_DATA=$store OMP_NUM_THREADS=$threads python3 -m pruning worker "${where[@]}" --once --poll 0.5 \
      >> "$W/$name.log" 2>&1 < /dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
}

study() {  # $1 model: validation -> choose -> final -> table, in the study's store
  local model=$1 S=$W/study-$1
  mkdir -p "$S"
  queue "study-$model-validation" "sweeps/study-validation-$model.yaml" $STORE || return 1
  PRUNING_LAB_DATA=$STORE python3 scripts/allocation_study.py choose --model "$model" --out "$S/choices-$model.json" \
    --allow-missing --all > "$S/choices.md" || return 1
  PRUNING_LAB_DATA=$STORE python3 scripts/allocation_study.py final --model "$model" --choices "$S/choices-$model.json" \
    --out "$S/final.yaml" || return 1
  queue "study-$model-final" "$S/final.yaml" $STORE || return 1
  PRUNING_LAB_DATA=$STORE python3 scripts/allocation_study.py table > "$S/table.md"
}

speed_7b() {  # issue 20/32's figures on random LLaMA-7B and 70B shapes (timing only), the headline ones first
  # (a batch cut short keeps them): the reference beside ours, the statistics pass stopped early or not
  local w=(--methods wanda --sparsity 0.7)
  [[ -d /tmp/wanda-ref/lib || ! -d .gpu/wanda-ref/lib ]] || cp -r .gpu/wanda-ref /tmp/wanda-ref  # carried alone
  if [[ -d /tmp/wanda-ref/lib ]]; then  # the reference beside ours: same weights, same tokens, one process
    python3 bench/reference_wanda.py --repo /tmp/wanda-ref --device cuda --methods wanda --sparsity 0.7 \
      --section reference_wanda_7b --json "$W/reference_wanda.json"
  fi
  # the statistics pass stopped at down_proj (on) against the whole block (off): masks by digest
  python3 bench/prune.py --device cuda --placement gpu "${w[@]}" --stats-exit on,off \
    --section prune_speed_wanda_gpu --json "$W/wanda_gpu.json"
  if [[ -d /tmp/wanda-ref/lib ]]; then
    python3 bench/reference_wanda.py --repo /tmp/wanda-ref --device cuda --methods sparsegpt --sparsity 0.7 --layers 4 \
      --section reference_sparsegpt_7b_4blocks --json "$W/reference_sparsegpt.json"
  fi
  python3 bench/block_profile.py --device cuda --method wanda --layers 3 --json "$W/block_profile_wanda.json"
  python3 bench/prune.py --device cuda --placement offload "${w[@]}" --section prune_speed_wanda_offload --json "$W/wanda_offload.json"
  python3 bench/prune.py --device cuda --placement offload --methods sparsegpt --sparsity 0.7 --stats-exit on,off \
    --section prune_speed_sparsegpt_offload --json "$W/sparsegpt_offload.json"
  python3 bench/prune.py --device cuda --placement gpu "${w[@]}" --calib-batch 8 \
    --section prune_speed_wanda_gpu_batch8 --json "$W/wanda_gpu_batch8.json"
  python3 bench/sparsegpt_profile.py --device cuda --json "$W/sparsegpt_profile.json"
  python3 bench/block_profile.py --device cuda --method sparsegpt --layers 3 --json "$W/block_profile_sparsegpt.json"
  python3 bench/llama70b_shape.py --device cuda --dir /tmp/l70 --blocks 8 --json "$W/llama70b_shape.json"
  rm -rf /tmp/l70
  python3 -m pytest -q -p no:cacheprovider tests/test_prefetch_cuda.py tests/test_streaming.py tests/test_streaming_writer.py \
    tests/test_calibration.py > "$W/speed-cuda-tests.log" 2>&1
}

e2e_7b() {  # one whole `pruning run` on a saved random LLaMA-7B shape (32 blocks, hidden 4096, MLP 11008, fp16;
  # SmolLM2's tokenizer): float64 spectra, alpha_peak allocation (all, eps 0.2), Wanda 70 %, 128 x 2048 wiki
  # calibration, whole wiki perplexity, attention statistics, publish; $W/e2e_7b.json: per-stage timings,
  # perplexity, peak GPU memory, wall time ($E2E_ARGS: more `pruning run` options). Timing only: random weights.
  export PRUNING_LAB_DATA=/tmp/pld-e2e
  rm -rf /tmp/pld-e2e && mkdir -p /tmp/pld-e2e/store /tmp/pld-e2e/jobs /tmp/site /tmp/plcache/corpora
  python3 - <<'PY' || return 1
import time, torch
from transformers import AutoTokenizer
from pruning.model.load import resolve_model, save_model
from pruning.model.synthetic import random_llama
t0 = time.time()
from pathlib import Path
tok = AutoTokenizer.from_pretrained(".gpu/tok" if Path(".gpu/tok/tokenizer.json").is_file() else resolve_model("smollm2-135m").location)
model = random_llama(hidden=4096, layers=32, intermediate=11008, heads=32, vocab=len(tok), dtype=torch.float16, device="cuda")
save_model(model.cpu(), tok, "/tmp/rand7b")
print(f"saved /tmp/rand7b in {time.time() - t0:.1f} s")
PY
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 500 > /tmp/e2e-mem.log 2>/dev/null &
  smi=$!
  start=$(date +%s.%N)
  python3 -m pruning run --model /tmp/rand7b --method wanda --sparsity 0.7 --strategy linear --preset all --metric alpha_peak \
    --epsilon 0.2 --device cuda --set evaluation.perplexity='[wiki]' --set evaluation.zeroshot_tasks='[]' \
    --set evaluation.attention=true --set evaluation.batch_size=8 ${E2E_ARGS:-} 2>&1 | tail -25
  end=$(date +%s.%N)
  kill $smi 2>/dev/null
  OUT=$W python3 - "$start" "$end" <<'PY'
import json, os, sys
from pruning.store.queries import list_runs, run_detail
runs = list_runs()
run = runs[runs["kind"] == "run"].iloc[0]
detail = run_detail(run["run_id"])
out = {"run_id": run["run_id"], "status": run["status"], "ppl": float(run["ppl"]) if run["ppl"] == run["ppl"] else None,
       "ppl_protocol": run.get("ppl_protocol"), "wall_s": round(float(sys.argv[2]) - float(sys.argv[1]), 1),
       "timings": detail.get("timings"), "placement": detail.get("env", {}).get("placement"), "device": detail.get("env", {}).get("device"),
       "peak_gpu_memory_used_mib (nvidia-smi, every 0.5 s)": max((int(x) for x in open("/tmp/e2e-mem.log").read().split() if x.isdigit()), default=None)}
print(json.dumps(out, indent=1, default=str))
if os.environ.get("OUT"):
    json.dump(out, open(os.path.join(os.environ["OUT"], "e2e_7b.json"), "w"), indent=1, default=str)
PY
  unset PRUNING_LAB_DATA
}

driver() {
  there_env
  [[ -n ${NO_MPS:-} ]] || pgrep -f nvidia-cuda-mps-control > /dev/null || nvidia-cuda-mps-control -d || echo "MPS did not start"
  local phase
  for phase in "$@"; do
    echo "$phase" > $W/PHASE
    echo "=== $(date +%T) $phase"
    case $phase in
      precision) mkdir -p /tmp/pld-prec && touch /tmp/pld-prec/.marker
                 queue precision sweeps/precision-smollm2-135m.yaml /tmp/pld-prec ;;
      bench:*) cap_workers "${phase#bench:}"; echo "$phase: $NW_WHY" | tee "$W/$phase.log"
               python3 -m bench.warm_sweep --model "${phase#bench:}" --device cuda --workers "$NW" --runs 24 --cal-batch 8 \
                 --root "/tmp/ws-${phase#bench:}" --json "$W/warm_sweep-${phase#bench:}.json" >> "$W/$phase.log" 2>&1 ;;
      bench-bf16) cap_workers smollm2-135m; echo "$phase: $NW_WHY" | tee "$W/$phase.log"
                  python3 -m bench.warm_sweep --model smollm2-135m --device cuda --dtype bfloat16 --workers "$NW" \
                    --runs 24 --cal-batch 8 --modes warm --root /tmp/ws-bf16 --json "$W/warm_sweep-bf16.json" >> "$W/$phase.log" 2>&1 ;;
      study:*) need_store && study "${phase#study:}" ;;
      sensitivity:*) need_store && queue "$phase" "sweeps/study-sensitivity-${phase#sensitivity:}.yaml" $STORE ;;
      sweep:*) need_store && queue "$(basename "${phase#sweep:}" .yaml)" "${phase#sweep:}" $STORE ;;
      speed-7b) speed_7b > "$W/speed-7b.log" 2>&1 ;;
      e2e-7b) e2e_7b > "$W/e2e-7b.log" 2>&1 ;;
      *) echo "unknown phase $phase; accepted: precision bench:MODEL bench-bf16 study:MODEL sensitivity:MODEL sweep:FILE speed-7b e2e-7b" ;;
    esac
    echo "=== $(date +%T) $phase done (exit $?)"
  done
  echo done > $W/PHASE
  date -u +%FT%TZ > $W/DONE
}

collect() {
  : "${OUT:?OUT must be set (the output folder of the device tool)}"
  rm -rf /tmp/collect && mkdir -p /tmp/collect/runs
  local d
  for d in $STORE /tmp/pld-prec; do
    [[ -f $d/.marker ]] && find "$d/store/runs" -mindepth 1 -maxdepth 1 -newer "$d/.marker" -type d -exec cp -r {} /tmp/collect/runs/ \;
  done
  [[ -d $STORE/jobs ]] && cp -r $STORE/jobs /tmp/collect/jobs
  [[ -d /tmp/pld-prec/jobs ]] && cp -r /tmp/pld-prec/jobs /tmp/collect/jobs-precision
  rsync -a --exclude '*.pt' $W/ /tmp/collect/batch/ 2>/dev/null || cp -r $W /tmp/collect/batch
  for d in /tmp/ws-*; do  # the benches' worker and job logs and their stores (not their run bundles' tensors)
    [[ -d $d ]] && (cd "$d" && find . -name '*.log' -o -name 'log.txt' | tar cf - -T - 2>/dev/null) \
      | (mkdir -p "/tmp/collect/$(basename "$d")" && tar xf - -C "/tmp/collect/$(basename "$d")")
  done
  tar czf "$OUT/batch.tgz" -C /tmp/collect .
  echo "new runs: $(ls /tmp/collect/runs | wc -l); phase: $(cat $W/PHASE 2>/dev/null); $(du -h "$OUT/batch.tgz" | cut -f1)"
  if [[ -f $W/DONE ]]; then echo "done at $(cat $W/DONE)"; else echo "still running"; fi
  tail -n 25 $W/driver.log 2>/dev/null
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader 2>/dev/null
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  slim) slim ;;
  unslim) unslim ;;
  merge) merge "${2:-}" ;;
  unpack) unpack ;;
  start)
    shift; export WORKERS=8
    if [[ ${1:-} =~ ^[0-9]+$ ]]; then WORKERS=$1; shift; fi
    (( $# )) || { echo "start: name the phases (see $0's header)" >&2; exit 2; }
    mkdir -p $W/bin
    if [[ -f $W/pid ]] && kill -0 "$(cat $W/pid)" 2>/dev/null; then echo "already running"; exit 0; fi
    cp "$0" $W/bin/gpu.sh  # later calls replace the tree under a running script
    setsid nohup bash $W/bin/gpu.sh driver-in "$PWD" "$@" > $W/driver.log 2>&1 < /dev/null &
    echo $! > $W/pid
    echo "started driver pid $! with $WORKERS workers; phases $*"
    ;;
  driver-in) shift; cd "$1" && shift && driver "$@" ;;
  workers)
    shift; export WORKERS=8
    if [[ ${1:-} =~ ^[0-9]+$ ]]; then WORKERS=$1; shift; fi
    (( $# == 1 )) || { echo "workers: name one phase (see $0's header)" >&2; exit 2; }
    there_env
    models=$(phase_models "$1") || { echo "workers: the models of phase $1 could not be read" >&2; exit 1; }
    # shellcheck disable=SC2086
    cap_workers $models
    echo "$NW"; echo "$1: $NW_WHY" >&2
    ;;
  stop)
    pkill -f "gpu.sh driver-in"; pkill -f "bench.warm_sweep"; pkill -f "pruning worker"; pkill -f "pruning.jobs.runner"
    sleep 3; echo "stopped" ;;
  collect) collect ;;
  *) sed -n '2,45p' "$0" >&2; exit 2 ;;
esac
