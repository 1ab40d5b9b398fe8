#!/usr/bin/env bash
# Pack what a bare GPU machine reached through the `device` tool needs for MODELS (their GGUFs, the wheels
# the runs lack, the offline corpora) into one tar stream cut into chunks that each fit one call beside
# the tracked tree (a call carries at most 64 MiB, tree included; the tree grows with every stored run,
# so the chunk size is computed from it here, now). Writes .gpu/c01 .. .gpu/cNN (git-ignored). Then, in
# the repository root on the GPU machine, one call per chunk, each carrying its .gpu/cII:
#   MODEL=... scripts/gpu_grid.sh unpack   (keeps the chunk; once all are there: joins, installs the
#                                           wheels, copies the corpora, converts the GGUF)
# Make the chunk calls back to back (one message of calls): a machine idle for 30 s is given back, and the
# chunks already unpacked in its /tmp go with it.
# Usage: MODEL=smollm2-135m|gemma3-270m scripts/gpu_pack.sh   (the wheels come from .gpu/w1, .gpu/w2a,
# .gpu/w2b as scripts/gpu_carry.sh downloads them)
set -euo pipefail
cd "$(dirname "$0")/.."
MODELS=${MODELS:-${MODEL:-smollm2-135m}}  # one or more, space-separated: each one's GGUF travels
grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
for w in .gpu/w1 .gpu/w2a .gpu/w2b; do
  compgen -G "$w/*.whl" > /dev/null || { echo "$w holds no wheels: run scripts/gpu_carry.sh first" >&2; exit 1; }
done
pack=$(mktemp -d)
trap 'rm -rf "$pack"' EXIT
mkdir -p "$pack/gguf" "$pack/wheels" "$pack/corpora"
for model in $MODELS; do
  case $model in
    smollm2-135m) ln -s "$(.venv/bin/python -c "from pruning.model.fetch import smollm2_gguf_path; print(smollm2_gguf_path())")" \
                    "$pack/gguf/$model.gguf" ;;
    gemma3-270m) .venv/bin/python -c "import sys; from pathlib import Path; from pruning.model.fetch import download_gemma3_gguf; \
                    print(download_gemma3_gguf(Path(sys.argv[1])))" "$pack/dl" > /dev/null
                 mv "$pack/dl/gemma3-270m.gguf" "$pack/gguf/$model.gguf" && rm -rf "$pack/dl" ;;
    *) echo "MODELS: $model is not accepted; accepted: smollm2-135m, gemma3-270m" >&2; exit 2 ;;
  esac
done
ln -s "$PWD"/.gpu/w1/*.whl "$PWD"/.gpu/w2a/*.whl "$PWD"/.gpu/w2b/*.whl "$pack/wheels/"
cp "${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}"/corpora/* "$pack/corpora/"
tree=$(git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
untracked=$(git ls-files -o --exclude-standard -z | xargs -0 -r stat -c %s | awk '{s += $1} END {print s + 0}')
chunk=$(( 64 * 1024 * 1024 - tree - untracked - 2 * 1024 * 1024 ))  # 2 MiB margin for the commits still to come
(( chunk > 4 * 1024 * 1024 )) || { echo "the tree ($tree bytes) leaves no room to carry" >&2; exit 1; }
rm -rf .gpu/c[0-9]* && mkdir -p .gpu/chunks
tar chf - -C "$pack" . | split -b "$chunk" -d -a 2 - .gpu/chunks/part
parts=(.gpu/chunks/part*)
for i in "${!parts[@]}"; do
  dir=$(printf ".gpu/c%02d" $((i + 1)))
  mkdir -p "$dir" && mv "${parts[$i]}" "$dir/" && echo "${#parts[@]} ${MODELS// /,}" > "$dir/NPARTS"
done
rmdir .gpu/chunks
echo "$MODELS: ${#parts[@]} chunks of $((chunk / 1024 / 1024)) MiB in .gpu/c01..$(printf 'c%02d' ${#parts[@]}) (tree $((tree / 1024 / 1024)) MiB)"
