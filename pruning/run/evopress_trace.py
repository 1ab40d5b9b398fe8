"""An EvoPress search's trace in a run's ``metrics`` table, without torch (the pages read it): the
parent's fitness per generation as rows of stage ``search`` named ``evopress_fitness/gen0001`` ...
(:mod:`pruning.run.evopress` writes them)."""

from __future__ import annotations

import pandas as pd

TRACE_STAGE = "search"
TRACE_PREFIX = "evopress_fitness/gen"


def trace_table(trace: pd.DataFrame) -> pd.DataFrame:
    """A trace (generation, fitness) as rows of a run's ``metrics`` table."""
    return pd.DataFrame({"stage": TRACE_STAGE, "name": [f"{TRACE_PREFIX}{int(g):04d}" for g in trace["generation"]],
                         "value": trace["fitness"].astype(float)})


def trace_from_metrics(metrics: pd.DataFrame) -> pd.DataFrame:
    """generation, fitness from a run's ``metrics`` table (empty when it holds no EvoPress trace)."""
    if metrics.empty or "name" not in metrics:
        return pd.DataFrame(columns=["generation", "fitness"])
    rows = metrics[metrics["name"].astype(str).str.startswith(TRACE_PREFIX)]
    return pd.DataFrame({"generation": rows["name"].str[len(TRACE_PREFIX):].astype(int),
                         "fitness": rows["value"].astype(float)}).sort_values("generation", ignore_index=True)
