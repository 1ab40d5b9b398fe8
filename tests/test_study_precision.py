"""pruning.study.precision (issue 26): bfloat16 runs read against their float32 twins' seed spread."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pruning.config.run_config import RunConfig
from pruning.store import publish_run
from pruning.study.precision import PRECISION_TAG, precision_report, precision_table, precision_verdict, twin_id


def _tables(wiki: float, lee: float, acc: float, stage: str = "pruned") -> dict[str, pd.DataFrame]:
    rows = [{"stage": stage, "dataset": ds, "text_digest": f"d-{ds}", "seqlen": 2048, "limit_windows": None,
             "n_windows": n, "total_windows": n, "n_tokens": n * 2047, "ppl": v} for ds, v, n in (("wiki", wiki, 175), ("lee", lee, 36))]
    zs = [{"stage": stage, "task": "wiki_cloze", "metric": "acc", "filter": "none", "value": acc, "num_fewshot": 0, "limit": None}]
    return {"perplexity": pd.DataFrame(rows), "zeroshot": pd.DataFrame(zs)}


def _config(dtype: str, seed: int = 0, strategy: str = "uniform") -> RunConfig:
    return RunConfig.from_dict({"model": {"name": "tiny-llama", "device": "cuda", "dtype": dtype},
                                "calibration": {"dataset": "wiki:train", "nsamples": 128, "seqlen": 2048, "seed": seed},
                                "pruning": {"method": "wanda", "sparsity": 0.7},
                                "allocation": {"strategy": strategy},
                                "tags": [PRECISION_TAG] if dtype == "bfloat16" else ["allocation-study"]})


def test_twin_is_the_float32_run_of_the_same_config() -> None:
    bf16 = _config("bfloat16")
    assert twin_id(bf16) == _config("float32").run_id != bf16.run_id
    assert twin_id(bf16, seed=2) == _config("float32", seed=2).run_id != twin_id(bf16)


def test_bf16_within_and_outside_the_seed_spread(data_dir: Path) -> None:
    # float32 seeds of uniform: wiki 100, 102, 104 (std 2); lee 50, 50.5, 51 (std 0.5); acc 0.40, 0.41, 0.42 (std 0.01)
    for seed in (0, 1, 2):
        publish_run(_config("float32", seed), tables=_tables(100 + 2 * seed, 50 + 0.5 * seed, 0.40 + 0.01 * seed))
    # bfloat16 seed 0: wiki +1.5 (inside the std 2), lee +0.8 (outside 0.5), acc -0.005 (inside)
    publish_run(_config("bfloat16"), tables=_tables(101.5, 50.8, 0.395))
    table = precision_table().set_index("metric")
    assert table.at["wiki", "fp32"] == pytest.approx(100) and table.at["wiki", "fp32_std"] == pytest.approx(2.0)
    assert table.at["wiki", "delta"] == pytest.approx(1.5) and bool(table.at["wiki", "within"])
    assert table.at["lee", "delta"] == pytest.approx(0.8) and table.at["lee", "within"] is not None and not table.at["lee", "within"]
    assert bool(table.at["wiki_cloze", "within"]) and table.at["wiki", "seeds"] == 3
    verdict = precision_verdict(table.reset_index())
    assert verdict.startswith("bfloat16 leaves 1 of 3") and "lee" in verdict and verdict.endswith("keep float32")
    report = precision_report()
    assert report.endswith(verdict) and "| wanda    | uniform  |" in report and "0.8" in report


def test_no_twins_no_verdict(data_dir: Path) -> None:
    assert precision_report() == "No succeeded run tagged precision-check in the store."
    publish_run(_config("bfloat16", strategy="uniform"), tables=_tables(101.5, 50.8, 0.395))
    table = precision_table()
    assert table["within"].isna().all() and table["fp32"].isna().all()
    assert precision_verdict(table).startswith("no verdict")
