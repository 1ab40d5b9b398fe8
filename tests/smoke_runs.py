"""A budgeted smoke run, as a new user launches one from the form: the shipped Wanda / 70 % / `all`
(alpha_peak, ε 0.2) config of SmolLM2 scored on 1 window of 8 tokens, perplexity 1,837 (issue 15:
it once landed in the full-protocol grid cell and its ε curve). Published with its real protocol
columns into the store the caller points at (PRUNING_LAB_DATA or ``root``)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

WIKI_TEST_DIGEST = "0cc60813547efec8"  # the wiki test text every shipped SmolLM2 run scored
SMOKE_PPL = 1837.0


def publish_smoke_run(root: Path | str | None = None) -> str:
    """Publish the smoke run; returns its run id."""
    from pruning.config.run_config import RunConfig
    from pruning.store.publish import publish_run

    config = RunConfig.from_dict({
        "model": {"name": "smollm2-135m", "device": "cpu"},
        "calibration": {"dataset": "wiki", "nsamples": 1, "seqlen": 8, "seed": 0},
        "allocation": {"strategy": "linear", "preset": "all", "metric": "alpha_peak", "epsilon": 0.2},
        "pruning": {"method": "wanda", "sparsity": 0.7},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 8, "limit_windows": 1},
        "label": "smoke from the form",
    })
    perplexity = pd.DataFrame([{
        "stage": "pruned", "dataset": "wiki", "text_digest": WIKI_TEST_DIGEST, "seqlen": 8, "limit_windows": 1,
        "n_windows": 1, "total_windows": 358225 // 8, "n_tokens": 8, "nll": math.log(SMOKE_PPL), "ppl": SMOKE_PPL,
    }])
    publish_run(config, tables={"perplexity": perplexity}, root=root)
    return config.run_id
