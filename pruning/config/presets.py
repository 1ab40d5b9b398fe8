"""Named layer-group presets: the column headers of the team's notes.

A preset fixes ``score_groups`` (the matrix types whose spectral metric, averaged, scores a
unit) and ``granularity`` (``block`` = one ratio per transformer block; ``split`` = attention
and MLP sub-blocks get separate ratios). Names are matched case-insensitively with spaces
normalised, and the notes' typo "output" is read as "out" ("QKV output" == "QKVout").
"""

from __future__ import annotations

from pruning.allocation.registry import STRATEGY_SPECS

import re
from dataclasses import dataclass

from pruning.errors import ConfigError

MATRIX_TYPES: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")
ATTENTION_TYPES: tuple[str, ...] = ("q", "k", "v", "o")
MLP_TYPES: tuple[str, ...] = ("gate", "up", "down")
GRANULARITIES: tuple[str, ...] = ("block", "split", "matrix")
#: grid column of each allocation strategy that no spectral metric scores: such runs get the
#: strategy's own column whatever their preset; ``linear`` (AlphaPruning) runs are labelled by their
#: preset (and metric). OWL: Yin et al. 2023; DLP: Chen et al., ICML 2025; ATP (``depth``): Huang et
#: al., ICML 2025.
STRATEGY_COLUMNS: dict[str, str] = {s.name: s.column for s in STRATEGY_SPECS if s.column is not None}


def strategy_column(strategy: object) -> str | None:
    """The grid column of a strategy with its own column (``"dlp"`` -> ``"DLP"``), None otherwise."""
    return STRATEGY_COLUMNS.get(str(strategy)) if isinstance(strategy, str) else None


@dataclass(frozen=True)
class Preset:
    """A notes column header: which matrix types score a unit, at which granularity."""

    name: str
    score_groups: tuple[str, ...]
    granularity: str
    description: str


_PRESETS: tuple[Preset, ...] = (
    Preset("all", MATRIX_TYPES, "block", "all seven types, block-wise (AlphaPruning default, the notes' GT)"),
    Preset("split", MATRIX_TYPES, "split", "all seven types, attention and MLP sub-blocks separately (the notes' 'split')"),
    Preset("QKV", ("q", "k", "v"), "block", "query, key and value projections"),
    Preset("OUT", ("o",), "block", "attention output projection only"),
    Preset("V", ("v",), "block", "value projection only"),
    Preset("OUT V", ("v", "o"), "block", "output and value projections"),
    Preset("K", ("k",), "block", "key projection only"),
    Preset("Q", ("q",), "block", "query projection only"),
    Preset("Q OUT GATE", ("q", "o", "gate"), "block", "query, output and MLP gate"),
    Preset("Gate", ("gate",), "block", "MLP gate projection only"),
    Preset("QK", ("q", "k"), "block", "query and key projections"),
    Preset("QK OUT", ("q", "k", "o"), "block", "query, key and output projections"),
    Preset("QKVout", ("q", "k", "v", "o"), "block", "all attention projections"),
    Preset("QKVoutg", ("q", "k", "v", "o", "gate"), "block", "attention projections and MLP gate"),
    Preset("QKVout + split", ("q", "k", "v", "o"), "split", "attention projections, attention and MLP sub-blocks allocated separately"),
    Preset("Q out", ("q", "o"), "block", "query and output projections"),
    Preset("Q out split", ("q", "o"), "split", "query and output, sub-blocks separately"),
    Preset("Q out gate split", ("q", "o", "gate"), "split", "query, output and gate, sub-blocks separately"),
    Preset("QK out split", ("q", "k", "o"), "split", "query, key and output, sub-blocks separately"),
)
# "Q out gate" is the same set as "Q OUT GATE"; normalisation makes them one key.


def normalize_preset_name(name: str) -> str:
    """Canonical lookup key: lower case, 'output' -> 'out', all whitespace removed
    (so "QKV output", "qkv out" and "QKVout" are one preset)."""
    key = re.sub(r"output", "out", name.strip().lower())
    return re.sub(r"\s+", "", key)


PRESETS: dict[str, Preset] = {normalize_preset_name(p.name): p for p in _PRESETS}


def preset_names() -> list[str]:
    """Display names of all presets, in the notes' order."""
    return [p.name for p in _PRESETS]


def get_preset(name: str) -> Preset:
    """Look up a preset by its notes header (case/space-insensitive; 'output' == 'out')."""
    preset = PRESETS.get(normalize_preset_name(name))
    if preset is None:
        raise ConfigError(
            f"allocation.preset: unknown preset {name!r}; accepted: {', '.join(repr(n) for n in preset_names())}"
        )
    return preset


def parse_score_groups(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Parse 'q,k,v,o' or a list into matrix types, validated and in canonical order."""
    items = [s.strip().lower() for s in (value.split(",") if isinstance(value, str) else value)]
    items = [s for s in items if s]
    bad = [s for s in items if s not in MATRIX_TYPES]
    if bad or not items:
        raise ConfigError(
            f"allocation.score_groups: unknown matrix type(s) {bad or items!r}; accepted: {', '.join(MATRIX_TYPES)}"
        )
    return tuple(t for t in MATRIX_TYPES if t in items)
