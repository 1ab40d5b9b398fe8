"""Choosing every family's knobs on the validation runs of the store (lowest ``wiki:validation``
perplexity of the whole split, one protocol) and writing the choices file."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pruning.config.run_config import RunConfig
from pruning.study.protocol import (
    CHOICES_DIR, FAMILY_BY_NAME, VALIDATION_DATASET, VALIDATION_TAG, Candidate, calibration_for, candidates,
    model_layers, validation_base,
)
from pruning.study.results import _store_root, _tagged_runs

log = logging.getLogger(__name__)

@dataclass
class CandidateResult:
    """A candidate with what the store says about it."""

    candidate: Candidate
    run_id: str
    status: str  # succeeded | failed | missing | no-validation-ppl
    validation_ppl: float | None = None


@dataclass
class CellChoice:
    """The chosen candidate of one (method, sparsity, family), or None when none has a number."""

    method: str
    sparsity: float
    family: str
    results: list[CandidateResult]
    chosen: int | None


def pick_lowest(values: list[float | None]) -> int | None:
    """Index of the lowest value; None and NaN never win; a tie keeps the earlier index."""
    best: int | None = None
    for i, v in enumerate(values):
        if v is None or math.isnan(v):
            continue
        if best is None or v < values[best]:  # type: ignore[operator]
            best = i
    return best


def choose_cells(results: list[CandidateResult]) -> list[CellChoice]:
    """Group results by (method, sparsity, family) in candidate order and pick each cell's lowest
    validation perplexity (:func:`pick_lowest`)."""
    cells: dict[tuple[str, float, str], list[CandidateResult]] = {}
    for r in results:
        c = r.candidate
        cells.setdefault((c.method, c.sparsity, c.family), []).append(r)
    return [CellChoice(m, s, f, rs, pick_lowest([r.validation_ppl for r in rs])) for (m, s, f), rs in cells.items()]


def validation_results(model: str, layers: int, store: str | Path | None = None) -> list[CandidateResult]:
    """Every candidate of ``model`` matched by run id with the succeeded, ``study-validation``-tagged
    runs of the store and their pruned ``wiki:validation`` perplexity (whole split, one protocol)."""
    from pruning.store.queries import perplexity_cells

    root = _store_root(store)
    base = RunConfig.from_dict(validation_base(model))
    runs = _tagged_runs(root, VALIDATION_TAG)
    runs = runs[runs["model"] == model]
    status = dict(zip(runs["run_id"], runs["status"]))
    cands = [(cand, base.with_overrides(cand.overrides).run_id) for cand in candidates(layers)]
    cells = perplexity_cells(model=model, stage="pruned", root=root)
    cells = cells[(cells["dataset"] == VALIDATION_DATASET) & cells["run_id"].isin({run_id for _, run_id in cands})]
    protocols = sorted(set(cells["protocol"].dropna()))
    if len(protocols) > 1:
        raise RuntimeError(f"{VALIDATION_DATASET}: the store holds {len(protocols)} protocols {protocols}; "
                           "choices would mix them")
    budgeted = cells[cells["budgeted"].astype(bool)]
    if not budgeted.empty:
        raise RuntimeError(f"{VALIDATION_DATASET}: runs {sorted(budgeted['run_id'])[:3]} used a window budget; "
                           "the protocol scores the whole split")
    ppl = dict(zip(cells["run_id"], cells["ppl"]))
    out = []
    for cand, run_id in cands:
        st = status.get(run_id, "missing")
        value = ppl.get(run_id) if st == "succeeded" else None
        if st == "succeeded" and value is None:
            st = "no-validation-ppl"
        out.append(CandidateResult(cand, run_id, st, None if value is None else float(value)))
    return out


def _num(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else value


def choices_json(model: str, layers: int, cells: list[CellChoice]) -> dict[str, Any]:
    """The choices file: every candidate (knobs, run id, status, validation ppl) and the chosen one."""
    def cand(r: CandidateResult) -> dict[str, Any]:
        return {"knobs": r.candidate.knobs, "variant": r.candidate.variant, **r.candidate.info,
                "overrides": r.candidate.overrides,
                "run_id": r.run_id, "status": r.status, "validation_ppl": _num(r.validation_ppl)}

    return {
        "model": model, "layers": layers, "validation_dataset": VALIDATION_DATASET,
        "calibration": calibration_for(model), "written_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cells": [{"method": c.method, "sparsity": c.sparsity, "family": c.family,
                   "chosen": None if c.chosen is None else cand(c.results[c.chosen]),
                   "candidates": [cand(r) for r in c.results]} for c in cells],
    }


def _knob_text(candidate: Candidate) -> str:
    """The candidate's variant (where its family has several) and knobs: "preset=split, epsilon=0.3"."""
    knobs = [f"{k.split('.')[-1]}={v:g}" for k, v in candidate.knobs.items()]
    text = ", ".join(filter(None, [FAMILY_BY_NAME[candidate.family].variant_text(candidate.variant), *knobs])) or "—"
    if "depth_fraction" in candidate.info:
        text += f" (f={candidate.info['depth_fraction']:g})"
    return text


def choices_markdown(cells: list[CellChoice], every: bool = False) -> str:
    """Markdown table of the chosen knobs (``every``: one row per candidate, the chosen in bold)."""
    out = ["| method | sparsity | family | knobs | wiki:validation ppl | candidates with a number |",
           "|---|---|---|---|---|---|"]
    for c in cells:
        label = FAMILY_BY_NAME[c.family].label
        n_ok = sum(_num(r.validation_ppl) is not None for r in c.results)
        rows = list(enumerate(c.results)) if every else ([(c.chosen, c.results[c.chosen])] if c.chosen is not None else [])
        if not rows:
            out.append(f"| {c.method} | {c.sparsity:.0%} | {label} | (none) | | {n_ok}/{len(c.results)} |")
        for i, r in rows:
            ppl = "" if _num(r.validation_ppl) is None else f"{r.validation_ppl:.3f}"
            knobs = _knob_text(r.candidate)
            if every and i == c.chosen:
                knobs, ppl = f"**{knobs}**", f"**{ppl}**"
            status = "" if r.status == "succeeded" else f" ({r.status})"
            out.append(f"| {c.method} | {c.sparsity:.0%} | {label} | {knobs}{status} | {ppl} | {n_ok}/{len(c.results)} |")
    return "\n".join(out)


def choose(model: str, store: str | Path | None = None, out: Path | None = None, layers: int | None = None,
           allow_missing: bool = False) -> list[CellChoice]:
    """Pick each (method, sparsity, family)'s knobs (and variant, over all of them) on the validation runs
    and write the choices file.
    Raises RuntimeError listing the candidates that are missing or failed, unless ``allow_missing``
    (then a family with no number at all has no choice)."""
    n_layers = model_layers(model, layers)
    results = validation_results(model, n_layers, store)
    bad = [r for r in results if r.status != "succeeded"]
    if bad and not allow_missing:
        shown = "; ".join(f"{r.candidate.method} {r.candidate.sparsity:.0%} {r.candidate.family} "
                          f"{_knob_text(r.candidate)} {r.run_id}: {r.status}" for r in bad[:8])
        raise RuntimeError(f"{len(bad)} of {len(results)} validation candidates of {model} are not usable "
                           f"({shown}{' ...' if len(bad) > 8 else ''}); run them, or pass --allow-missing")
    cells = choose_cells(results)
    unchosen = [f"{c.method} {c.sparsity:.0%} {c.family}" for c in cells if c.chosen is None]
    if unchosen and not allow_missing:
        raise RuntimeError(f"no candidate with a finite validation perplexity in: {', '.join(unchosen)}")
    out = out or CHOICES_DIR / f"choices-{model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(choices_json(model, n_layers, cells), indent=1) + "\n")
    log.info("wrote %s (%d cells, %d candidates not usable)", out, len(cells), len(bad))
    return cells
