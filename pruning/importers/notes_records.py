"""What the research-notes importer reads: the method and statistic vocabulary of the notes, model
headings, and the records (perplexity cells, zero-shot blocks) a parse produces."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

METHOD_LETTERS: dict[str, str] = {"m": "magnitude", "w": "wanda", "s": "sparsegpt"}
METHOD_WORDS: dict[str, str] = {"magnitude": "magnitude", "magnitdue": "magnitude", "wanda": "wanda", "sparsegpt": "sparsegpt"}
ATTENTION_STATISTICS: dict[str, str] = {"v entropy": "v_entropy", "v rank": "v_rank_ratio", "qk entropy": "qk_entropy"}

_MODEL_RE = re.compile(r"^\s*llama\s*(?:(?P<ver>\d)\s+)?\(?(?P<size>\d+)\s*b\)?\s*$", re.I)


def model_name(text: str) -> str | None:
    """Canonical model name of a notes heading: 'llama 2 7b' / 'LLaMA 2 (7B)' -> 'LLaMA-2-7B'."""
    m = _MODEL_RE.match(text.replace("(", " ").replace(")", " "))
    if not m:
        return None
    return "LLaMA-" + (f"{m.group('ver')}-" if m.group("ver") else "") + f"{m.group('size')}B"


def parse_number(text: str) -> float:
    """A number as the notes write it (``nan`` included)."""
    return float("nan") if text.lower() == "nan" else float(text)


@dataclass
class Cell:
    """One perplexity read from the notes."""

    line: int
    raw_text: str
    model: str
    method: str | None
    ppl: float
    preset_raw: str | None = None
    epsilon: float | None = None
    is_baseline: bool = False
    notes: list[str] = field(default_factory=list)


@dataclass
class ZeroShotBlock:
    """One lm-eval result dict of the notes, with the line of each task and the MEAN line."""

    line: int
    label: str
    model: str
    results: dict[str, Any]
    task_lines: dict[str, int]
    mean: float | None = None
    mean_line: int | None = None
