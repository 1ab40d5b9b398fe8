#!/usr/bin/env bash
# Issue 20: one whole `python -m pruning run` on a saved random model of LLaMA-7B shape (32 blocks,
# hidden 4096, MLP 11008, fp16; SmolLM2's tokenizer, so the vocabulary is 49,152): weight spectra
# (float64), alpha_peak allocation (preset all, eps 0.2), Wanda at 70 % with the default 128 x 2048 wiki
# calibration, wiki perplexity (full text), attention statistics, publish. Run on the GPU machine
# after scripts/gpu_grid.sh setup (model, corpora, wheels), or on a bare machine in one call that carries
# .gpu/w1 .gpu/corpora .gpu/tok, then .gpu/w2a, then .gpu/w2b (the wheels, the offline texts, SmolLM2's tokenizer files). Placement
# is the config's default, offload: auto (measured). Extra `pruning run` options: $E2E_ARGS. Writes $OUT/e2e_7b.json: the run's
# per-stage timings as the store recorded them, its perplexity, peak GPU memory and the wall time.
# A random model is a fair subject for timing, not for quality.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PRUNING_LAB_CACHE=/tmp/plcache PRUNING_LAB_DATA=/tmp/pld-e2e \
  HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
rm -rf /tmp/pld-e2e && mkdir -p /tmp/pld-e2e/store /tmp/pld-e2e/jobs /tmp/site /tmp/plcache/corpora
# the run's wheels, unless a /tmp/site that workers are importing from has them (gpu_study.sh E2E=1)
have() { python3 -c "import duckdb, pydantic, lm_eval" 2>/dev/null; }
have || { bash scripts/gpu_grid.sh wheels; have; } || { echo "carry .gpu/w1 .gpu/w2a .gpu/w2b first" >&2; exit 1; }
if [[ -d .gpu/corpora ]]; then cp .gpu/corpora/* /tmp/plcache/corpora/; fi
python3 - <<'PY' || exit 1
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
python3 - "$start" "$end" <<'PY'
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
