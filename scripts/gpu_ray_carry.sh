#!/usr/bin/env bash
# Pack ray[default]==2.60.0 for the GPU machines (Python 3.12, no ray on their image) into two parts
# small enough to be carried beside the repository (64 MiB a call): .gpu/ray1 and .gpu/ray2.
# Only the packages that image lacks are packed (its aiohttp, grpcio, protobuf, pyyaml, requests, ...
# are used as they are); the Java jars, rllib, ray.llm and the dashboard's web client are left out
# (a job cluster needs none of them). scripts/gpu_two_gpus.sh ray-setup unpacks them there.
set -euo pipefail
work=$(mktemp -d)
present="aiohttp aiosignal aiohappyeyeballs attrs certifi charset_normalizer click filelock frozenlist grpcio idna
msgpack multidict packaging prometheus_client propcache protobuf pyyaml requests six typing_extensions urllib3 wrapt yarl"
platforms=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any)
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d "$work/all" "ray[default]==2.60.0"
mkdir -p "$work/keep"
for f in "$work"/all/*.whl; do
  name=$(basename "$f" | sed 's/-[0-9].*//' | tr 'A-Z-' 'a-z_')
  [[ " $(echo $present) " == *" $name "* ]] || cp "$f" "$work/keep/"
done
python3 -m pip install -q --no-deps --no-compile --target "$work/raysite" --python-version 3.12 --implementation cp \
  --only-binary=:all: "${platforms[@]}" "$work"/keep/*.whl
( cd "$work/raysite" && rm -rf ray/jars ray/rllib ray/llm ray/dashboard/client/build bin/py-spy \
  && find . -name '*.map' -delete && find . -name __pycache__ -prune -exec rm -rf {} + )
tar cJf "$work/raysite.txz" -C "$work" raysite
rm -rf .gpu/ray1 .gpu/ray2 && mkdir -p .gpu/ray1 .gpu/ray2
split -n 2 -d "$work/raysite.txz" "$work/raysite.part"
mv "$work/raysite.part00" .gpu/ray1/ && mv "$work/raysite.part01" .gpu/ray2/
rm -rf "$work"
du -sh .gpu/ray1 .gpu/ray2
