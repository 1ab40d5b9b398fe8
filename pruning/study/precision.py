"""Issue 26's precision check of the study model: may the study's runs be made in bfloat16?

``sweeps/precision-smollm2-135m.yaml`` (tag :data:`PRECISION_TAG`) re-makes six float32 final cells of
SmolLM2-135M (70 %, calibration seed 0, the knobs chosen on wiki:validation) and the dense run in
bfloat16, everything else equal. Each bfloat16 run's float32 twins are the same config with
``model.dtype = float32`` and calibration seeds 0, 1, 2 (their run ids, :attr:`RunConfig.run_id`). The
rule: bfloat16 may replace float32 only where every cell's bfloat16 value lies within the float32 seed
spread (the sample std over the seeds, ddof 1) of its seed-0 twin, on wiki, lee and wiki_cloze.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pruning.config.run_config import RunConfig
from pruning.study.protocol import FINAL_SEEDS, ZEROSHOT_TASK, family_of, knob_text
from pruning.study.results import _store_root, _tagged_runs, run_values

PRECISION_TAG = "precision-check"
METRICS: tuple[str, ...] = ("wiki", "lee", ZEROSHOT_TASK)


def twin_id(config: RunConfig, dtype: str = "float32", seed: int | None = None) -> str:
    """Run id of ``config`` made in ``dtype`` (and with calibration seed ``seed`` when given)."""
    data = config.to_dict()
    data["model"]["dtype"] = dtype
    if seed is not None:
        data["calibration"]["seed"] = seed
    return RunConfig.from_dict(data).run_id


def precision_table(store: str | Path | None = None) -> pd.DataFrame:
    """One row per (succeeded bfloat16 run tagged :data:`PRECISION_TAG`, metric): method, family, knobs,
    metric, bf16, fp32 (the seed-0 twin), delta (bf16 - fp32), fp32_std (over the twins of the final
    seeds present, NaN under two), seeds, within (|delta| <= fp32_std; None without a spread), and the
    run ids. Empty without precision runs."""
    from pruning.store.queries import run_sql

    root = _store_root(store)
    runs = _tagged_runs(root, PRECISION_TAG)
    runs = runs[runs["status"] == "succeeded"]
    if runs.empty:
        return pd.DataFrame()
    raw = run_sql("SELECT run_id, config_json FROM runs WHERE kind = 'run'", root).set_index("run_id")
    pairs = []
    for run_id in runs["run_id"]:
        config = RunConfig.from_dict(json.loads(raw.at[run_id, "config_json"]))
        seeds = FINAL_SEEDS.get(config.pruning.sparsity, (0,)) if config.pruning.method != "dense" else (0,)
        twins = [twin_id(config, seed=s) for s in seeds]
        pairs.append((run_id, config, twins))
    ids = [r for r, _, twins in pairs for r in [r, *twins]]
    values = run_values(ids, root, "the precision check's runs")
    rows = []
    for run_id, config, twins in pairs:
        for metric in METRICS:
            bf16 = values.at[run_id, metric]
            if math.isnan(bf16):
                continue
            twin_values = values.loc[[t for t in twins if t in values.index], metric].dropna()
            fp32 = values.at[twins[0], metric] if twins[0] in values.index else float("nan")
            std = float(twin_values.std(ddof=1)) if len(twin_values) > 1 else float("nan")
            delta = bf16 - fp32
            rows.append({"method": config.pruning.method, "family": family_of(config) or config.allocation.strategy,
                         "knobs": knob_text(config), "metric": metric, "bf16": bf16, "fp32": fp32, "delta": delta,
                         "fp32_std": std, "seeds": len(twin_values),
                         "within": None if math.isnan(std) or math.isnan(delta) else bool(abs(delta) <= std),
                         "run_id": run_id, "twin_id": twins[0]})
    return pd.DataFrame(rows)


def precision_verdict(table: pd.DataFrame) -> str:
    """The rule in one sentence: bfloat16 keeps every cell within the float32 seed spread, or which do not."""
    judged = table[table["within"].notna()] if not table.empty else table
    if judged.empty:
        return "no verdict: no bfloat16 run has float32 twins with a seed spread in this store"
    out = judged[~judged["within"].astype(bool)]
    if out.empty:
        return (f"bfloat16 keeps all {len(judged)} (cell, metric) pairs within the float32 seed spread: "
                "the study may run in bfloat16")
    names = ", ".join(f"{r.method} {r.family} {r.metric} (Δ {r.delta:+.3g}, spread {r.fp32_std:.3g})"
                      for r in out.itertuples())
    return f"bfloat16 leaves {len(out)} of {len(judged)} (cell, metric) pairs outside the float32 seed spread: {names}; keep float32"


def precision_report(store: str | Path | None = None) -> str:
    """The precision table as markdown and its verdict."""
    table = precision_table(store)
    if table.empty:
        return "No succeeded run tagged precision-check in the store."
    show = table.drop(columns=["run_id", "twin_id"]).copy()
    for col in ("bf16", "fp32", "delta", "fp32_std"):
        show[col] = show[col].map(lambda v: "" if math.isnan(v) else f"{v:.4g}")
    return show.to_markdown(index=False) + "\n\n" + precision_verdict(table)
