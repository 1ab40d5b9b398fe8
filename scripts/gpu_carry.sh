#!/usr/bin/env bash
# Prepare what a bare GPU machine (Python 3.12, torch + transformers, no internet) needs to run
# the grid sweep, in .gpu/ (git-ignored via .git/info/exclude): the SmolLM2 GGUF in three parts
# (a device call carries at most 64 MiB, the tracked tree included: ~15 MiB with the shipped
# store), the wheels it lacks, the offline corpora. Then, with scripts/gpu_grid.sh:
#   call 1: carry .gpu/gguf1 .gpu/w1 .gpu/corpora -> scripts/gpu_grid.sh setup
#   call 2: carry .gpu/gguf2                      -> scripts/gpu_grid.sh setup
#   call 3: carry .gpu/gguf3                      -> scripts/gpu_grid.sh setup
#   call 4: carry .gpu/gguf4                      -> scripts/gpu_grid.sh setup   (joins and converts)
#   call 4: carry .gpu/w2                         -> scripts/gpu_grid.sh run WORKERS SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
GGUF=$(.venv/bin/python -c "from pruning.model.fetch import smollm2_gguf_path; print(smollm2_gguf_path())")
PARTS=4  # the tracked tree is ~30 MB: 4 parts keep every call under the 64 MiB carry limit
rm -rf .gpu && mkdir -p .gpu/w1 .gpu/w2 .gpu/corpora
split -n "$PARTS" -d "$GGUF" .gpu/part
for i in $(seq "$PARTS"); do
  mkdir -p ".gpu/gguf$i" && mv ".gpu/part0$((i - 1))" ".gpu/gguf$i/" && echo "$PARTS" > ".gpu/gguf$i/NPARTS"
done
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$1" "${@:2}"; }
dl .gpu/w1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection gguf==0.19.0 mwparserfromhell==0.7.2
dl .gpu/w2 duckdb==2.0.1 lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 more_itertools evaluate pytablewriter
# two carries of < 25 MiB each (the tracked tree is ~38 MB): duckdb alone, the rest
mkdir -p .gpu/w2a .gpu/w2b && mv .gpu/w2/duckdb* .gpu/w2a/ && mv .gpu/w2/* .gpu/w2b/ && rmdir .gpu/w2
cp "${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}"/corpora/* .gpu/corpora/   # the text files and their MANIFEST.json
du -sh .gpu/*
