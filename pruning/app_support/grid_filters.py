"""Which values a perplexity grid (:mod:`pruning.app_support.grid`) may show: the rows of
``pruning.store.queries.perplexity_cells`` for one model, sparsity, dataset, source kind, ε and evaluation
protocol (never a block probe's), the choices a grid page offers among them (protocols, ε), and the dense
model's perplexity shown beside the grid."""

from __future__ import annotations

import math

import pandas as pd

from pruning.evaluation.protocol import ppl_protocol_options

#: which values a grid shows: every kind, the notes' references only, or the team's own runs only
SOURCES: tuple[str, ...] = ("all", "reference", "run")


def grid_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """The values a perplexity grid may hold: every row of ``perplexity_cells`` but a block probe's (its
    sparsity is one block's, not the model's mean: ``pruning.allocation.probe``), so no option a grid page
    offers (a sparsity, a protocol, an ε) comes from a probe."""
    if "strategy" not in cells.columns:
        return cells
    return cells[cells["strategy"].astype(object) != "probe"]


def filter_cells(cells: pd.DataFrame, model: str | None = None, sparsity: float | None = None,
                 dataset: str | None = None, source: str = "all", epsilon: float | None = None,
                 protocol: str | None = None) -> pd.DataFrame:
    """Rows of ``cells`` for one model / sparsity (within 1e-6) / dataset / source kind
    ("all", "reference" or "run") / ε / evaluation protocol. With ``epsilon`` set, values of
    another ε are dropped and values with no ε (uniform, OWL, cells whose ε the notes do not
    state) are kept. ``protocol`` (a key of ``pruning.evaluation.protocol``) keeps that protocol's values
    only; None keeps every protocol (callers that compare values pass one)."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if epsilon is not None and not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0 or None (every ε), got {epsilon!r}")
    out = grid_cells(cells)
    if model is not None:
        out = out[out["model"] == model]
    if sparsity is not None:
        out = out[(out["sparsity"] - float(sparsity)).abs() < 1e-6]
    if dataset is not None and "dataset" in out.columns:
        out = out[out["dataset"] == dataset]
    if source != "all":
        out = out[out["kind"] == source]
    if epsilon is not None and "epsilon" in out.columns:
        eps = pd.to_numeric(out["epsilon"], errors="coerce")
        out = out[eps.isna() | ((eps - float(epsilon)).abs() < 1e-9)]
    if protocol is not None and "protocol" in out.columns:
        out = out[out["protocol"] == protocol]
    return out


def protocol_options(cells: pd.DataFrame, model: str | None = None, sparsity: float | None = None,
                     dataset: str | None = None, source: str = "all") -> list[str]:
    """Evaluation protocols among the values of these filters, the default first (the full
    protocol of the team's sweeps; budgeted smoke runs last): the grid page's protocol choices."""
    return ppl_protocol_options(filter_cells(cells, model, sparsity, dataset, source))


def default_protocol(cells: pd.DataFrame, model: str | None = None, sparsity: float | None = None,
                     dataset: str | None = None, source: str = "all") -> str | None:
    """The protocol a grid shows unless another is chosen (None when the cells carry none)."""
    options = protocol_options(cells, model, sparsity, dataset, source)
    return options[0] if options else None


def epsilon_options(cells: pd.DataFrame, model: str | None = None, sparsity: float | None = None,
                    dataset: str | None = None, source: str = "all", protocol: str | None = None) -> list[float]:
    """Distinct ε values (ascending) among the values :func:`build_grid` would show for these
    filters: the choices of the grid page's ε filter."""
    if protocol is None:
        protocol = default_protocol(cells, model, sparsity, dataset, source)
    sub = filter_cells(cells, model, sparsity, dataset, source, protocol=protocol)
    if "epsilon" not in sub.columns:
        return []
    return sorted({round(float(e), 6) for e in pd.to_numeric(sub["epsilon"], errors="coerce").dropna()})


def dense_perplexity(dense_cells: pd.DataFrame, model: str, dataset: str | None,
                     protocol: str | None = None) -> float | None:
    """Median dense-model perplexity of ``model`` on ``dataset`` among the team's own runs
    (rows of ``perplexity_cells(stage="dense")``) measured with ``protocol`` (None: any), or None
    when no run measured it. Shown beside the grid: a model without the notes' GT column still
    gets its unpruned reference."""
    if dense_cells.empty:
        return None
    sub = dense_cells[(dense_cells["model"] == model) & (dense_cells["kind"] == "run")]
    if dataset is not None:
        sub = sub[sub["dataset"] == dataset]
    if protocol is not None and "protocol" in sub.columns:
        sub = sub[sub["protocol"] == protocol]
    values = pd.to_numeric(sub["ppl"], errors="coerce").dropna()
    return float(values.median()) if not values.empty else None
