"""lm-eval JSON import: both layouts normalized; unknown layouts rejected with the store unchanged."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from pruning.config.run_config import RunConfig
from pruning.importers.lmeval import import_lm_eval
from pruning.store import ImportFormatError, list_runs, publish_run, run_table, zeroshot_scores
from pruning.store.layout import latest_attempts, store_root

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_v03_layout_as_reference(data_dir: Path) -> None:
    import_lm_eval(FIXTURES / "lm_eval_v03.json", model="LLaMA-7B", label="dense baseline")
    zs = zeroshot_scores()
    assert len(zs) == 4
    row = zs[(zs["task"] == "arc_easy") & (zs["metric"] == "acc_norm")].iloc[0]
    assert (row["value"], row["stderr"], row["filter"], row["task_version"]) == (0.45, 0.0101, "none", "0")
    assert row["num_fewshot"] == 0 and row["harness_version"] == "0.3" and math.isnan(row.get("limit", math.nan))
    runs = list_runs(kind="reference")
    assert runs["label"].tolist() == ["dense baseline"] and runs["model"].tolist() == ["LLaMA-7B"]
    assert runs["zeroshot_mean"].iloc[0] == pytest.approx((0.625 + 0.5 + 0.55) / 3)


def test_v04_layout_attached_to_a_run(data_dir: Path) -> None:
    config = RunConfig().with_overrides({"pruning.sparsity": 0.7})
    publish_run(config, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 30.0}])})
    import_lm_eval(FIXTURES / "lm_eval_v04.json", run_id=config.run_id)
    zs = run_table(config.run_id, "zeroshot")
    assert len(zs) == 5
    wino = zs[zs["task"] == "winogrande"].iloc[0]
    assert wino["value"] == 0.6 and math.isnan(wino["stderr"]) and wino["num_fewshot"] == 5
    assert wino["filter"] == "none" and wino["task_version"] == "1.0" and wino["limit"] == 100.0
    assert wino["harness_version"] == "0.4.13"
    runs = list_runs()
    assert len(runs) == 1 and runs["zeroshot_mean"].iloc[0] == pytest.approx((0.25 + 0.6 + 0.35) / 3)


def test_unknown_layout_rejected(data_dir: Path) -> None:
    with pytest.raises(ImportFormatError, match=r"unknown lm-eval layout.*scores"):
        import_lm_eval(FIXTURES / "lm_eval_unknown.json", model="X", label="y")
    with pytest.raises(ImportFormatError, match="not in the store"):
        import_lm_eval(FIXTURES / "lm_eval_v03.json", run_id="wanda-000000000000")
    assert latest_attempts(store_root()) == {}
