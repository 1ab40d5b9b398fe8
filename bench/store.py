"""Results-store benchmark: 10,000 synthetic runs x 1,000 long-form metric rows (10M rows).

    python -m bench.store [--runs 10000] [--metrics-per-run 1000] [--keep DIR]

The data is generated vectorized with pyarrow and written directly as compacted catalog parts
(``pruning.store.bulk_append``), not by 10,000 publishes. Timed: the method-by-layer-group grid
(``metric_grid`` over the 10M metric rows, and ``perplexity_grid``) and one-run queries
(``run_table(run_id, "metrics")``, ``run_detail``), each cold (fresh connection and caches),
warm without the result cache (DuckDB query on the cached views) and warm (in-process cache).
Targets: grid <= 300 ms warm, one run <= 50 ms. Results go to bench/RESULTS.md, section "store".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench._results import markdown_table, write_section

log = logging.getLogger("bench.store")

MODELS = ["LLaMA-7B", "LLaMA-2-7B", "LLaMA-3-8B"]
METHODS = ["magnitude", "wanda", "sparsegpt"]
PRESETS = ["all", "QKV", "OUT", "V", "K", "Q", "QK", "QK OUT", "QKVout", "QKVoutg", "QKVout + split", "Q out split"]


def _dict(indices: np.ndarray, values: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(pa.array(indices.astype(np.int32)), pa.array(values))


def generate(root: Path, n_runs: int, per_run: int, seed: int = 0) -> dict[str, float]:
    """Write the synthetic store under ``root``; returns timings and sizes."""
    from pruning.store import bulk_append

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    run_ids = [f"syn-{i:06d}" for i in range(n_runs)]
    ids = pa.array(run_ids)
    model_i, method_i, preset_i = (rng.integers(0, len(v), n_runs) for v in (MODELS, METHODS, PRESETS))
    status = np.where(rng.random(n_runs) < 0.02, "failed", "succeeded")
    runs = pa.table({
        "bundle": ids, "run_id": ids, "kind": pa.array(["run"] * n_runs),
        "model": pa.array(np.array(MODELS)[model_i]), "method": pa.array(np.array(METHODS)[method_i]),
        "strategy": pa.array(["linear"] * n_runs), "preset": pa.array(np.array(PRESETS)[preset_i]),
        "metric": pa.array(["alpha_peak"] * n_runs), "epsilon": pa.array(rng.choice([0.1, 0.2, 0.3], n_runs)),
        "sparsity": pa.array(rng.choice([0.5, 0.6, 0.7], n_runs)), "sparsity_assumed": pa.array([False] * n_runs),
        "status": pa.array(status), "is_baseline": pa.array([False] * n_runs),
        "created_at": pa.array([f"2025-01-01T00:00:{i % 60:02d}+00:00" for i in range(n_runs)]),
        "config_json": pa.array(["{}"] * n_runs), "env_json": pa.array(["{}"] * n_runs),
        "timings_json": pa.array(["{}"] * n_runs), "schema_version": pa.array(np.ones(n_runs, dtype=np.int64)),
    })
    ppl = pa.table({
        "bundle": ids, "run_id": ids, "stage": pa.array(["pruned"] * n_runs), "dataset": pa.array(["wikitext2"] * n_runs),
        "ppl": pa.array(np.exp(rng.normal(3.2, 0.5, n_runs))),
    })
    row_run = np.repeat(np.arange(n_runs), per_run)
    names = [f"alpha_peak/block{b:02d}/{t}" for b in range(per_run // 7 + 1) for t in ("q", "k", "v", "o", "gate", "up", "down")][:per_run]
    metrics = pa.table({
        "bundle": _dict(row_run, run_ids), "run_id": _dict(row_run, run_ids),
        "stage": _dict(np.zeros(n_runs * per_run, dtype=np.int32), ["pruned"]),
        "name": _dict(np.tile(np.arange(per_run), n_runs), names),
        "value": pa.array(rng.normal(4.0, 1.0, n_runs * per_run)),
    })
    t_gen = time.perf_counter() - t0
    t1 = time.perf_counter()
    bulk_append({"runs": runs, "perplexity": ppl, "metrics": metrics}, root=root)
    t_write = time.perf_counter() - t1
    size = sum(p.stat().st_size for p in (root / "catalog" / "parts").iterdir())
    return {"generate_s": t_gen, "write_s": t_write, "rows": metrics.num_rows, "size_mb": size / 2**20, "names": names}


def _time(fn, repeat: int) -> tuple[float, float]:
    """(first call ms, median of the next ``repeat`` calls ms)."""
    t = time.perf_counter()
    fn()
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return first, statistics.median(times) if times else first


def run_benchmark(n_runs: int, per_run: int, keep: Path | None) -> list[dict]:
    from pruning.store import queries

    tmp = tempfile.TemporaryDirectory(prefix="bench-store-") if keep is None else None
    data = Path(tmp.name) if tmp else keep
    os.environ["PRUNING_LAB_DATA"] = str(data)
    root = data / "store"
    gen = generate(root, n_runs, per_run)
    log.info("generated %d metric rows in %.2f s, wrote %.1f MB in %.2f s", gen["rows"], gen["generate_s"],
             gen["size_mb"], gen["write_s"])
    name = gen["names"][3]
    one = f"syn-{n_runs // 2:06d}"
    cases = {
        "grid: metric_grid over the metrics table (method x layer group, one model)":
            lambda: queries.metric_grid(name, model="LLaMA-7B"),
        "grid: perplexity_grid (method x layer group, one model)": lambda: queries.perplexity_grid("LLaMA-7B"),
        "one run: run_table(run_id, 'metrics') (1,000 rows)": lambda: queries.run_table(one, "metrics"),
        "one run: run_detail(run_id)": lambda: queries.run_detail(one),
        "list_runs() (10,000 rows)": lambda: queries.list_runs(),
    }
    rows = []
    for label, fn in cases.items():
        queries.clear_cache()
        cold, _ = _time(fn, 0)
        queries.clear_cache(results_only=True)

        def uncached(fn=fn):
            queries.clear_cache(results_only=True)
            return fn()

        _, warm_nocache = _time(uncached, 5)
        _, warm = _time(fn, 5)
        rows.append({"query": label, "cold ms": cold, "warm ms (no result cache)": warm_nocache, "warm ms (cached)": warm})
        log.info("%s: cold %.1f ms, warm %.1f ms (no result cache), %.2f ms cached", label, cold, warm_nocache, warm)
    shape = {"runs": n_runs, "metric rows": gen["rows"], "generate s": round(gen["generate_s"], 2),
             "write s": round(gen["write_s"], 2), "parquet MB": round(gen["size_mb"], 1)}
    if tmp:
        tmp.cleanup()
    return [shape, *rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--metrics-per-run", type=int, default=1_000)
    parser.add_argument("--keep", type=Path, default=None, help="write the synthetic store here and keep it")
    parser.add_argument("--no-record", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shape, *rows = run_benchmark(args.runs, args.metrics_per_run, args.keep)
    grid_ok = all(r["warm ms (no result cache)"] <= 300 for r in rows if r["query"].startswith("grid"))
    one_ok = all(r["warm ms (no result cache)"] <= 50 for r in rows if r["query"].startswith("one run"))
    body = (
        f"Synthetic store:\n\n{markdown_table([shape])}\n\n{markdown_table(rows)}\n\n"
        f"Targets (warm, without the result cache): grid <= 300 ms: {'met' if grid_ok else 'NOT met'}; "
        f"one run <= 50 ms: {'met' if one_ok else 'NOT met'}. Cold = first call with a fresh in-memory "
        "connection (views bound, Parquet footers read; files in the OS page cache). "
        f"Load average during the run: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"on {os.cpu_count()} cores (other jobs share the machine; figures scale with it)."
    )
    print(body)
    if not args.no_record:
        write_section("store", body)
    print(json.dumps({"grid_target_met": grid_ok, "one_run_target_met": one_ok}))


if __name__ == "__main__":
    main()
