"""Per-block sensitivity of the allocation study (issue 28): how much pruning one block alone costs,
beside each allocation metric per block.

Protocol: every block of the model is pruned on its own to :data:`PROBE_SPARSITY` with the run's method
(allocation strategy ``probe``, :mod:`pruning.allocation.probe`), calibrating on the study's ``wiki:train``
windows, and the whole ``wiki:validation`` split is read (the split every knob is chosen on; never test
or lee), as is a dense run of the same protocol. A block's sensitivity is the log perplexity ratio
``log(ppl_probe / ppl_dense)``. What an allocation metric should do is rank the blocks as their
sensitivity does: :func:`correlations` gives the Spearman rank correlation of each metric per block
(weight α and α_peak and the Hessian α of the dense model, OWL's outlier ratio, DLP's unimportance, the
block index of ATP) with the measured sensitivity, per model and method. The metrics are read from the
study's own runs in the store (their spectra and allocation tables), so no model is loaded here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruning.config.run_config import RunConfig
from pruning.study.protocol import METHODS, PROXY_TAGS, VALIDATION_DATASET, family_of, model_layers, validation_base
from pruning.study.results import _store_root, _tagged_runs

SENSITIVITY_TAG = "block-sensitivity"
#: CPU proxies of the profiles (a small budget: few calibration samples, a window budget on wiki:validation),
#: made to look before GPU time is spent; never mixed with the full protocol's profiles
PROXY_SENSITIVITY_TAG = "proxy-sensitivity"
#: the sparsity a probed block is pruned to: high enough that every block's cost shows above the noise of
#: one evaluation (the study's mean sparsities are 60 and 70 %, some allocations put blocks at 80-90 %)
PROBE_SPARSITY = 0.8
#: the metrics set beside the sensitivity: column -> (what it is, the sign a metric that ranks blocks the
#: way their sensitivity does would have: +1 = higher metric, more sensitive, i.e. keep denser)
METRICS: dict[str, tuple[str, int]] = {
    "depth": ("block index (ATP prunes later blocks more)", -1),
    "weight_alpha": ("weight α, mean over the block's matrices (AlphaPruning: higher α prunes more)", -1),
    "weight_alpha_peak": ("weight α_peak (the study's AlphaPruning metric)", -1),
    "hessian_alpha": ("Hessian α (the notes' metric: higher prunes more)", -1),
    "owl_ratio": ("OWL's outlier ratio (higher keeps denser)", +1),
    "dlp_unimportance": ("DLP's unimportance (higher prunes more)", -1),
}


def sensitivity_spec(model: str, layers: int, sparsity: float = PROBE_SPARSITY) -> dict[str, Any]:
    """The sensitivity sweep: the dense run (its base) and, for each study method, every block probed at
    ``sparsity``, with the validation runs' calibration and evaluation (whole ``wiki:validation``)."""
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity: {sparsity} is invalid; accepted: (0, 1)")
    base = {**validation_base(model), "tags": [SENSITIVITY_TAG], "pruning": {"method": "dense", "sparsity": 0.0}}
    include = [{"pruning.method": method, "pruning.sparsity": sparsity, "allocation.strategy": "probe",
                "allocation.probe_block": block} for method in METHODS for block in range(layers)]
    return {"name": f"study-sensitivity-{model}", "base": base, "include": include}


def write_sensitivity(model: str, out: Path, layers: int | None = None,
                      sparsity: float = PROBE_SPARSITY) -> list[RunConfig]:
    """Write the sensitivity sweep of ``model`` to ``out``; returns its runs (1 + methods x blocks)."""
    from pruning.study.sweeps import _write_sweep

    n_layers = model_layers(model, layers)
    spec = sensitivity_spec(model, n_layers, sparsity)
    base = RunConfig.from_dict(spec["base"])
    header = f"""Per-block sensitivity of {model} ({n_layers} blocks; issue 28), written by scripts/allocation_study.py
sensitivity. Each run prunes one block alone to {sparsity:.0%} (allocation strategy probe), the others dense,
calibrating on wiki:train like the validation runs, and reads the whole wiki:validation split; the base is
the dense run of the same protocol. {1 + len(spec['include'])} runs: the dense one + {len(METHODS)} methods x
{n_layers} blocks. Then: scripts/allocation_study.py table (Spearman correlation of each metric with it)."""
    return _write_sweep(out, header, spec, [base] + [base.with_overrides(o) for o in spec["include"]])


def sensitivity_profiles(store: str | Path | None = None, tag: str = SENSITIVITY_TAG) -> pd.DataFrame:
    """One row per succeeded probe run tagged ``tag`` (:data:`SENSITIVITY_TAG`): model, method, sparsity, block,
    run_id, ppl, dense_ppl (the dense run of the same model and protocol), sensitivity (log ppl ratio),
    protocol. Empty without probes; RuntimeError when a model's probes mix evaluation protocols."""
    from pruning.store.queries import perplexity_cells, run_sql

    columns = ["model", "method", "sparsity", "block", "run_id", "ppl", "dense_ppl", "sensitivity", "protocol",
               "protocol_label"]
    root = _store_root(store)
    runs = _tagged_runs(root, tag)
    runs = runs[runs["status"] == "succeeded"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    ids = set(runs["run_id"])
    raw = run_sql("SELECT run_id, config_json FROM runs WHERE kind = 'run'", root)
    configs = {r: RunConfig.from_dict(json.loads(c)) for r, c in zip(raw["run_id"], raw["config_json"]) if r in ids}
    cells = perplexity_cells(stage=None, root=root)
    cells = cells[cells["run_id"].isin(ids) & (cells["dataset"] == VALIDATION_DATASET)]
    cells = cells[(cells["stage"] == "pruned") | (cells["method"] == "dense")]
    for model, grp in cells.groupby("model"):
        protocols = sorted(set(grp["protocol"]))
        if len(protocols) > 1:
            raise RuntimeError(f"{model}: the sensitivity runs hold {len(protocols)} protocols {protocols}; "
                               "a profile would mix them")
    ppl = dict(zip(cells["run_id"], cells["ppl"]))
    protocol = dict(zip(cells["run_id"], cells["protocol"]))
    label = dict(zip(cells["run_id"], cells["protocol_label"])) if "protocol_label" in cells else protocol
    dense = {configs[r].model.name: ppl[r] for r in ids if r in ppl and configs[r].pruning.method == "dense"}
    rows = []
    for run_id, config in configs.items():
        if config.allocation.strategy != "probe" or run_id not in ppl:
            continue
        base = dense.get(config.model.name)
        rows.append({"model": config.model.name, "method": config.pruning.method, "sparsity": config.pruning.sparsity,
                     "block": int(config.allocation.probe_block), "run_id": run_id, "ppl": float(ppl[run_id]),
                     "dense_ppl": float("nan") if base is None else float(base),
                     "sensitivity": float("nan") if base is None else math.log(float(ppl[run_id]) / float(base)),
                     "protocol": protocol[run_id], "protocol_label": label[run_id]})
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "method", "block"], ignore_index=True)


def _mean_per_block(table: pd.DataFrame, column: str) -> pd.Series:
    if table.empty or column not in table.columns:
        return pd.Series(dtype=float)
    return table.groupby("block")[column].mean()


def _proxy_metric_runs(model: str, root: Path | None) -> pd.DataFrame:
    """The succeeded proxy runs of ``model`` (:data:`PROXY_TAGS`) as ``run_id, family, seed, phase`` rows."""
    from pruning.store.queries import run_sql

    runs = pd.concat([_tagged_runs(root, tag) for tag in PROXY_TAGS], ignore_index=True).drop_duplicates("run_id")
    runs = runs[runs["status"] == "succeeded"]
    if runs.empty:
        return pd.DataFrame(columns=["run_id", "family", "seed", "phase"])
    raw = run_sql("SELECT run_id, config_json FROM runs WHERE kind = 'run'", root).set_index("run_id")
    rows = []
    for run_id in runs["run_id"]:
        config = RunConfig.from_dict(json.loads(raw.at[run_id, "config_json"]))
        if config.model.name == model:
            rows.append({"run_id": run_id, "family": family_of(config), "seed": config.calibration.seed, "phase": "proxy"})
    return pd.DataFrame(rows, columns=["run_id", "family", "seed", "phase"])


def block_metrics(model: str, store: str | Path | None = None) -> pd.DataFrame:
    """Each allocation metric per block of ``model`` (columns of :data:`METRICS`, index block), read from
    the allocation study's runs in the store: the weight and Hessian spectra of a run that holds both,
    OWL's and DLP's per-block scores from an OWL and a DLP run (calibration seed 0 first). A model with no
    study run yet reads its CPU proxy runs (:data:`PROXY_TAGS`) instead. A metric no stored run carries is
    left out."""
    from pruning.store.queries import run_table
    from pruning.study.results import study_runs

    root = _store_root(store)
    runs = study_runs(store)
    runs = runs[(runs["model"] == model) & (runs["status"] == "succeeded")].sort_values(["seed", "phase"])
    if runs.empty:  # no study run of this model yet: its CPU proxy runs (their own, smaller calibration)
        runs = _proxy_metric_runs(model, root)
    if runs.empty:
        return pd.DataFrame()
    out: dict[str, pd.Series] = {}
    for family in ("ours", "hessian_alpha", "alpha_peak"):  # a run with spectra (ours and Hessian α: both sources)
        for run_id in runs.loc[runs["family"] == family, "run_id"]:
            spectra = run_table(run_id, "spectra", root)
            if spectra.empty:
                continue
            weight = spectra[spectra["source"] == "weight"] if "source" in spectra else spectra
            hessian = spectra[spectra["source"] == "hessian"] if "source" in spectra else spectra.iloc[0:0]
            out.setdefault("weight_alpha", _mean_per_block(weight, "alpha"))
            out.setdefault("weight_alpha_peak", _mean_per_block(weight, "alpha_peak"))
            if not hessian.empty:
                out.setdefault("hessian_alpha", _mean_per_block(hessian, "alpha"))
            if "hessian_alpha" in out:
                break
        if "hessian_alpha" in out:
            break
    for family, column in (("owl", "owl_ratio"), ("dlp", "dlp_unimportance")):
        for run_id in runs.loc[runs["family"] == family, "run_id"]:
            scores = _mean_per_block(run_table(run_id, "allocation", root), "score")
            if not scores.empty:
                out[column] = scores
                break
    frame = pd.DataFrame({k: v for k, v in out.items() if not v.empty})
    if frame.empty:
        return frame
    frame.insert(0, "depth", frame.index.astype(float))
    return frame[[c for c in METRICS if c in frame.columns]]


def correlations(profiles: pd.DataFrame, metrics_of: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Spearman rank correlation of each metric per block with the measured sensitivity, per (model,
    method): columns model, method, metric, rho, n, agrees (rho has the sign a metric that ranks blocks as
    their sensitivity does would have, :data:`METRICS`). ``metrics_of``: model -> :func:`block_metrics`."""
    rows = []
    for (model, method), grp in profiles.dropna(subset=["sensitivity"]).groupby(["model", "method"], sort=True):
        metrics = metrics_of.get(model, pd.DataFrame())
        sens = grp.set_index("block")["sensitivity"]
        for metric in metrics.columns:
            both = pd.concat([sens, metrics[metric]], axis=1, join="inner").dropna()
            if len(both) < 3:
                continue
            rho = float(both.iloc[:, 0].rank().corr(both.iloc[:, 1].rank()))
            sign = METRICS[metric][1]
            rows.append({"model": model, "method": method, "metric": metric, "rho": rho, "n": len(both),
                         "agrees": bool(np.sign(rho) == sign) if not math.isnan(rho) else False})
    return pd.DataFrame(rows, columns=["model", "method", "metric", "rho", "n", "agrees"])


def sensitivity_report(store: str | Path | None = None, tag: str = SENSITIVITY_TAG) -> str:
    """Markdown: the Spearman table and each profile's most and least sensitive blocks; "" without probes
    tagged ``tag`` (:data:`PROXY_SENSITIVITY_TAG`: the CPU proxies, their protocol said in the heading)."""
    profiles = sensitivity_profiles(store, tag)
    if profiles.empty:
        return ""
    metrics_of = {m: block_metrics(m, store) for m in sorted(set(profiles["model"]))}
    table = correlations(profiles, metrics_of)
    proxy = tag == PROXY_SENSITIVITY_TAG
    out = ["## Per-block sensitivity (issue 28)" + (": CPU proxy, protocol " + profiles["protocol_label"].iloc[0]
                                                    if proxy else ""), "",
           f"One block pruned alone to {profiles['sparsity'].iloc[0]:.0%} (strategy probe), {VALIDATION_DATASET} "
           f"({profiles['protocol_label'].iloc[0]}); "
           "sensitivity = log(ppl / dense ppl). Spearman ρ of each metric per block with it; a metric that ranks blocks "
           "as their sensitivity does has the sign in the last column (+: higher metric = more sensitive).", ""]
    if not table.empty:
        wide = table.pivot_table(index=["model", "method"], columns="metric", values="rho", aggfunc="first")
        metrics = [m for m in METRICS if m in wide.columns]
        out.append("| model | method | " + " | ".join(metrics) + " |")
        out.append("|---|---|" + "---|" * len(metrics))
        for (model, method), row in wide.iterrows():
            out.append(f"| {model} | {method} | " + " | ".join("" if math.isnan(row[m]) else f"{row[m]:+.2f}"
                                                             for m in metrics) + " |")
        out.append("| expected sign | | " + " | ".join("+" if METRICS[m][1] > 0 else "−" for m in metrics) + " |")
        out.append("")
    out.append("| model | method | blocks | dense ppl | most sensitive (block: ppl) | least sensitive |")
    out.append("|---|---|---|---|---|---|")
    for (model, method), grp in profiles.groupby(["model", "method"], sort=True):
        ranked = grp.sort_values("ppl")
        most = ", ".join(f"{int(r.block)}: {r.ppl:.1f}" for r in ranked.iloc[::-1].head(3).itertuples())
        least = ", ".join(f"{int(r.block)}: {r.ppl:.1f}" for r in ranked.head(3).itertuples())
        out.append(f"| {model} | {method} | {len(grp)} | {grp['dense_ppl'].iloc[0]:.2f} | {most} | {least} |")
    return "\n".join(out) + "\n"


__all__ = ["METRICS", "PROBE_SPARSITY", "PROXY_SENSITIVITY_TAG", "SENSITIVITY_TAG", "block_metrics", "correlations", "sensitivity_profiles",
           "sensitivity_report", "sensitivity_spec", "write_sensitivity"]
