"""App benchmark: first render of every page (AppTest run time) on a synthetic store of 10,000 runs
plus the notes' references. Target: <= 2 s per page.

    python -m bench.app [--runs 10000] [--repeat 3]

The store is made by ``bench.store.generate`` (compacted catalog parts, like a long-lived store);
one extra run with spectra, allocation and attention is published through the store's API so the
analysis pages draw real plots. Each page is timed from a fresh AppTest with the Streamlit and
store caches cleared ("cold": what a reviewer waits for after a new run lands) and again with
warm caches. Modules are imported once before timing (a running server has them). Results go to
bench/RESULTS.md, section "app".
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from bench._results import markdown_table, write_section

log = logging.getLogger("bench.app")
REPO = Path(__file__).resolve().parents[1]
PAGES = ["runs", "grid", "spectra", "attention", "zeroshot", "compare", "launch", "jobs"]
TARGET_S = 2.0


def publish_detailed_run(n_blocks: int = 32, sparsity: float = 0.7) -> str:
    """One run of a 32-block model with spectra (weight + Hessian), allocation and attention."""
    from pruning.config.run_config import RunConfig
    from pruning.config.presets import MATRIX_TYPES
    from pruning.store.publish import publish_run

    rng = np.random.default_rng(0)
    config = RunConfig.from_dict(
        {
            "model": {"name": "bench-32-blocks"},
            "pruning": {"method": "wanda", "sparsity": sparsity},
            "allocation": {"strategy": "linear", "preset": "QKVout + split"},
        }
    )
    spectra = pd.DataFrame(
        [
            {
                "model": "bench-32-blocks",
                "block": b,
                "matrix_type": t,
                "name": f"model.layers.{b}.{t}",
                "source": s,
                "alpha": rng.uniform(2, 6),
                "alpha_peak": rng.uniform(2, 6),
                "xmin": 1.0,
            }
            for b in range(n_blocks)
            for t in MATRIX_TYPES
            for s in ("weight", "hessian")
        ]
    )
    allocation = pd.DataFrame(
        [
            {
                "block": b,
                "matrix_type": t,
                "name": f"model.layers.{b}.{t}",
                "numel": 4096 * 4096,
                "sparsity_target": sparsity,
            }
            for b in range(n_blocks)
            for t in MATRIX_TYPES
        ]
    )
    attention = pd.DataFrame(
        [
            {"stage": st, "block": b, "head": h, "statistic": "attn_entropy", "value": rng.uniform(2, 4)}
            for st in ("dense", "pruned")
            for b in range(n_blocks)
            for h in range(32)
        ]
    )
    perplexity = pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 21.0}])
    publish_run(
        config, tables={"spectra": spectra, "allocation": allocation, "attention": attention, "perplexity": perplexity}
    )
    return config.run_id


def build_store(data: Path, n_runs: int) -> str:
    """Synthetic store (bench.store) + the notes + one detailed run; returns its run id."""
    from bench.store import generate
    from pruning.importers.notes import import_notes

    os.environ["PRUNING_LAB_DATA"] = str(data)
    generate(data / "store", n_runs, per_run=7)
    if (REPO / "data" / "store" / "runs").is_dir():
        _copy_shipped(data)  # the shipped references (the notes)
    else:
        import_notes(REPO.parent / "shared" / "seed" / "research-notes.txt")
    return publish_detailed_run()


def _copy_shipped(data: Path) -> None:
    import shutil

    for bundle in (REPO / "data" / "store" / "runs").iterdir():
        shutil.copytree(bundle, data / "store" / "runs" / bundle.name, dirs_exist_ok=True)


def render(page: str, state: dict, cold: bool) -> float:
    """Seconds of the first render of ``page`` in a fresh AppTest (caches cleared when ``cold``)."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from pruning.store import queries

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    if page != "runs":
        at.run()
        at.switch_page(f"pages/{page}.py")
    if cold:
        st.cache_data.clear()
        queries.clear_cache()
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"page {page}: {at.exception[0].value}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        t0 = time.perf_counter()
        detailed = build_store(Path(tmp), args.runs)
        build_s = time.perf_counter() - t0
        state = {"sb_runs": [detailed, "syn-000001"]}
        render("runs", state, cold=True)  # warm-up: imports, as in a running server
        rows = []
        for page in PAGES:
            cold = [render(page, state, cold=True) for _ in range(args.repeat)]
            warm = [render(page, state, cold=False) for _ in range(args.repeat)]
            rows.append(
                {
                    "page": page,
                    "first render s (cold caches, median)": statistics.median(cold),
                    "max s": max(cold),
                    "warm caches s": statistics.median(warm),
                    "<= 2 s": "yes" if max(cold) <= TARGET_S else "NO",
                }
            )
            cold_s, warm_s = statistics.median(cold), statistics.median(warm)
            print(f"{page:10s} cold {cold_s:.3f} s (max {max(cold):.3f}), warm {warm_s:.3f} s")
    body = (
        f"Synthetic store: {args.runs:,} runs (bench.store.generate) + the notes' references + one 32-block run "
        f"with spectra/allocation/attention (built in {build_s:.1f} s). Each page: a fresh AppTest, "
        f"median of {args.repeat}; target {TARGET_S} s.\n\n" + markdown_table(rows)
    )
    write_section("app", body, command="python -m bench.app " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
