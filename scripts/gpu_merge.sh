#!/usr/bin/env bash
# Merge what `scripts/gpu_study.sh collect` ($OUT/study.tgz) or `scripts/gpu_warm.sh collect` ($OUT/warm.tgz) brought back into
# this checkout: the new run bundles into data/store/runs/ (an attempt directory already here is left as
# it is), the catalog compacted, and the study driver's files where the repository keeps them:
#   study/choices-MODEL.json -> docs/study/choices-MODEL.json
#   study/choices.md         -> docs/study/choices-MODEL.md    (MODEL from the json beside it)
#   study/final.yaml         -> sweeps/study-final-MODEL.yaml  (MODEL from its `name:` line)
# Then it checks the store (verify --quick), says what a repack would still save (nothing, for runs
# written by this code), and prints the study table. Commit the result.
# Usage: scripts/gpu_merge.sh PATH/study.tgz
set -euo pipefail
cd "$(dirname "$0")/.."
tgz=${1:?usage: scripts/gpu_merge.sh PATH/study.tgz}
[[ -f $tgz ]] || { echo "$tgz: no such file" >&2; exit 2; }
py=.venv/bin/python
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar xzf "$tgz" -C "$tmp"
new=0 kept=0
if [[ -d $tmp/runs ]]; then
  for dir in "$tmp"/runs/*/; do
    name=$(basename "$dir")
    if [[ -e data/store/runs/$name ]]; then kept=$((kept + 1)); continue; fi
    cp -r "$dir" "data/store/runs/$name" && new=$((new + 1))
  done
fi
echo "runs: $new new bundle directories merged, $kept already here"
$py -m pruning compact
for sdir in "$tmp"/study "$tmp"/warm/study-*; do  # gpu_study.sh's study/, or gpu_warm.sh's warm/study-MODEL/
  [[ -d $sdir ]] || continue
  for json in "$sdir"/choices-*.json; do
    [[ -e $json ]] || continue
    model=$(basename "$json" .json); model=${model#choices-}
    cp "$json" "docs/study/choices-$model.json"
    [[ -f $sdir/choices.md ]] && cp "$sdir/choices.md" "docs/study/choices-$model.md"
    echo "choices of $model -> docs/study/choices-$model.{json,md}"
  done
  if [[ -f $sdir/final.yaml ]]; then
    model=$(sed -n 's/^name: study-final-//p' "$sdir/final.yaml")
    [[ -n $model ]] || { echo "$sdir/final.yaml has no 'name: study-final-MODEL' line" >&2; exit 1; }
    cp "$sdir/final.yaml" "sweeps/study-final-$model.yaml"
    echo "final sweep of $model -> sweeps/study-final-$model.yaml"
  fi
done
$py -m pruning verify --quick
$py -m pruning repack --dry-run
$py scripts/allocation_study.py table
