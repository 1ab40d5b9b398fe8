"""Allocation units: which matrices share one sparsity (``granularity``), and per-block inputs.

``block``  one unit per transformer block (id ``block{i}``);
``split``  attention and MLP sub-blocks of each block (``block{i}.attn`` / ``block{i}.mlp``); which
           matrix type belongs to which sub-block is answered by the family registry
           (:meth:`pruning.model.families.FamilySpec.sub_block`: from where the family's layout keeps the
           matrix), not guessed from names;
``matrix`` every matrix its own unit (id = the matrix name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pruning.errors import ConfigError

if TYPE_CHECKING:  # pruning.model.families imports torch; read only when `split` needs it
    from pruning.model.families import FamilySpec


def sub_block_of(types: pd.Series, family: "FamilySpec | None" = None) -> pd.Series:
    """'attn' or 'mlp' for every canonical matrix type, as ``family`` lays it out (default: LLaMA's
    layout, which every registered family shares)."""
    from pruning.model.families import FAMILIES

    spec = family or FAMILIES["llama"]
    lookup = {t: spec.sub_block(t) for t in set(types)}
    return types.map(lookup)


def unit_ids(frame: pd.DataFrame, granularity: str, family: "FamilySpec | None" = None) -> pd.Series:
    """Unit id of every row: ``block{i}``, ``block{i}.attn|mlp`` or the matrix name."""
    if granularity == "block":
        return "block" + frame["block"].astype(str)
    if granularity == "split":
        return "block" + frame["block"].astype(str) + "." + sub_block_of(frame["matrix_type"], family)
    if granularity == "matrix":
        return frame["name"].astype(str)
    raise ConfigError(f"allocation.granularity: unknown {granularity!r}; accepted: block, split, matrix")


def unit_table(frame: pd.DataFrame, units: pd.Series) -> pd.DataFrame:
    """One row per unit (first-appearance order): block, parameter count."""
    grouped = frame.groupby(units.to_numpy(), sort=False)
    return pd.DataFrame({"block": grouped["block"].first(), "numel": grouped["numel"].sum()})


def block_values(
    unit_frame: pd.DataFrame, values: Mapping[int, float] | None, field: str, needed_for: str
) -> np.ndarray:
    """``values[block]`` for every (block) unit, as floats; every block present and finite.

    field: the argument's name in messages (``owl_outlier_ratio``); needed_for: the sentence that
    says what the values are and where they come from.
    """
    if values is None:
        raise ConfigError(f"allocation.strategy {needed_for} ({field})")
    blocks = unit_frame["block"].astype(int).tolist()
    missing = [b for b in blocks if b not in values]
    if missing:
        raise ConfigError(f"{field}: missing blocks {missing}; given for {sorted(values)}")
    result = np.array([float(values[b]) for b in blocks])
    bad = [b for b, v in zip(blocks, result) if not math.isfinite(v)]
    if bad:
        raise ConfigError(f"{field}: NaN or infinite for blocks {bad}")
    return result


def names_text(names: list[str], limit: int = 12) -> str:
    """The first ``limit`` names, comma-separated, with the total when there are more."""
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f" ... ({len(names)} in all)" if len(names) > limit else "")
