"""pruning.calibration.protocol: every pruned result row names the calibration it was made with, and
views keep calibrations apart (the allocation study calibrates on wiki:train, the grid on wiki)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pruning.calibration.protocol import DEFAULT_CALIBRATION, by_calibration, calibration_label, calibration_options
from pruning.config.run_config import RunConfig
from pruning.store import publish_run
from pruning.store.queries import perplexity_cells, zeroshot_scores


def _tables(ppl: float) -> dict[str, pd.DataFrame]:
    rows = [{"stage": "pruned", "dataset": "wiki", "text_digest": "d", "seqlen": 2048, "limit_windows": None,
             "n_windows": 4, "total_windows": 4, "n_tokens": 8188, "ppl": ppl}]
    zs = [{"stage": "pruned", "task": "wiki_cloze", "metric": "acc", "filter": "none", "value": 0.5,
           "num_fewshot": 0, "limit": None}]
    return {"perplexity": pd.DataFrame(rows), "zeroshot": pd.DataFrame(zs)}


def test_the_store_labels_rows_with_their_calibration_not_their_seed(data_dir: Path) -> None:
    base = RunConfig.from_dict({"model": {"name": "m"}, "pruning": {"method": "wanda", "sparsity": 0.5}})
    runs = {
        "default": base,
        "seed 1": base.with_overrides({"calibration.seed": 1}),  # a replicate: same protocol
        "train": base.with_overrides({"calibration.dataset": "wiki:train"}),
        "short": base.with_overrides({"calibration.nsamples": 32, "calibration.seqlen": 512}),
        "dense": base.with_overrides({"pruning.method": "dense", "pruning.sparsity": 0.0}),
        "bf16": base.with_overrides({"model.dtype": "bfloat16"}),  # other statistics: another protocol
        "fp32": base.with_overrides({"model.dtype": "float32", "calibration.seed": 2}),
    }
    for i, config in enumerate(runs.values()):
        publish_run(config, tables=_tables(10.0 + i), timings={"total": 1.0})
    cells = perplexity_cells(stage=None).set_index("run_id")["calibration"]
    got = {name: cells[c.run_id] for name, c in runs.items()}
    assert got["default"] == got["seed 1"] == "wiki · 128 × 2048" == DEFAULT_CALIBRATION
    assert got["train"] == "wiki:train · 128 × 2048" == calibration_label("wiki:train", 128, 2048)
    assert got["short"] == "wiki · 32 × 512" and pd.isna(got["dense"])
    assert got["bf16"] == "wiki · 128 × 2048 · bfloat16" == calibration_label("wiki", 128, 2048, "bfloat16")
    assert got["fp32"] == DEFAULT_CALIBRATION
    scores = zeroshot_scores().set_index("run_id")["calibration"]
    assert scores[runs["train"].run_id] == got["train"]


def test_options_put_the_default_first_then_the_most_used() -> None:
    frame = pd.DataFrame({"calibration": ["lee · 128 × 2048"] * 3 + ["wiki:train · 128 × 2048"] * 3
                          + ["zz · 8 × 8"] * 5 + [DEFAULT_CALIBRATION, None]})
    assert calibration_options(frame) == [DEFAULT_CALIBRATION, "zz · 8 × 8", "lee · 128 × 2048", "wiki:train · 128 × 2048"]
    assert calibration_options(frame[frame["calibration"] != DEFAULT_CALIBRATION])[0] == "zz · 8 × 8"
    assert calibration_options(pd.DataFrame({"x": [1]})) == []


def test_a_view_keeps_one_calibration_and_the_rows_without_one() -> None:
    frame = pd.DataFrame({"calibration": [DEFAULT_CALIBRATION, "wiki:train · 128 × 2048", None], "v": [1, 2, 3]})
    assert by_calibration(frame, DEFAULT_CALIBRATION)["v"].tolist() == [1, 3]
    assert by_calibration(frame, "wiki:train · 128 × 2048")["v"].tolist() == [2, 3]
    assert by_calibration(frame, None)["v"].tolist() == [1, 2, 3]
    assert by_calibration(frame.drop(columns="calibration"), DEFAULT_CALIBRATION)["v"].tolist() == [1, 2, 3]
