"""The allocation study of issue 16: validation sweep, knob choice, final sweep and the study table.

    .venv/bin/python scripts/allocation_study.py validation --model smollm2-135m
    .venv/bin/python scripts/allocation_study.py choose --model smollm2-135m [--store data/store]
    .venv/bin/python scripts/allocation_study.py final --model smollm2-135m
    .venv/bin/python scripts/allocation_study.py table [--store data/store]
    .venv/bin/python scripts/allocation_study.py proxy [--store data/store]

Protocol. Every knob of every allocation family (OWL's M and lambda, AlphaPruning's and Hessian
alpha's epsilon, DLP's alpha, ATP's beta, the team's own epsilon) is chosen per (method, sparsity)
on the held-out ``wiki:validation`` split, calibrating on ``wiki:train`` (the calibration articles
minus the validation ones), so neither the validation nor the test text is ever calibrated on.
The final sweep then reads the wiki ``test`` split and ``lee`` once, with 3 calibration seeds at
70 %, and calibrates on ``lee`` in the other direction. A win of "ours" is claimed in a cell only
where its mean is better than every other family's by more than the seed spread
(:func:`beats_by_spread`).

Families (:data:`FAMILIES`): ``uniform``; ``owl`` (Yin et al. 2023); ``alpha_peak``
(AlphaPruning, Lu et al. 2024: linear, preset ``all``, metric ``alpha_peak``); ``dlp`` (Chen et
al., ICML 2025); ``depth`` (ATP, Huang et al., ICML 2025: beta = f min(2S, 2(1-S)) / (L-1), the
largest legal common difference scaled by f); ``hessian_alpha`` (the notes' "all · Hessian α":
linear, preset ``all``, metric ``hessian_alpha``); ``ours``, two variants chosen between on
validation like any knob: Hessian alpha per sub-block (linear, preset ``split`` = all seven matrix
types, attention and MLP sub-blocks allocated separately), and Hessian alpha mixed with the weight
``alpha_peak`` per block (linear, preset ``all``, ``metric_mix`` alpha_peak: the unit's normalised
score is the mean of the two metrics' min-max normalised scores, pruning.allocation.linear), and
Hessian alpha mixed with depth (``metric_mix`` depth, the block index: ATP's rising slope moved per
block by the Hessian alpha; added after the SmolLM2 validation runs showed ATP best for Wanda at 70 %
and Hessian alpha best for SparseGPT at 70 %, docs/allocation.md), each with epsilon 0.1 ... 0.4.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import itertools
import json
import logging
import math
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pruning.config import RunConfig  # noqa: E402
from pruning.presets import MATRIX_TYPES  # noqa: E402
from pruning.sweep import expand_sweep, load_sweep_spec  # noqa: E402

log = logging.getLogger("allocation_study")

STUDY_TAG = "allocation-study"
VALIDATION_TAG = "study-validation"
FINAL_TAG = "study-final"
DOMAIN_TAG = "study-domain"
METHODS: tuple[str, ...] = ("wanda", "sparsegpt")
SPARSITIES: tuple[float, ...] = (0.6, 0.7)
#: calibration seeds of the final sweep per sparsity (3 at 70 %, where wins are claimed against the spread)
FINAL_SEEDS: dict[float, tuple[int, ...]] = {0.6: (0,), 0.7: (0, 1, 2)}
#: sparsity and seed of the calibration-domain direction (calibrate on lee, evaluate on wiki test)
DOMAIN_SPARSITY, DOMAIN_SEED, DOMAIN_DATASET = 0.7, 0, "lee"
VALIDATION_DATASET = "wiki:validation"
CALIBRATION = {"dataset": "wiki:train", "nsamples": 128, "seqlen": 2048, "seed": 0}
#: samples per block call of the calibration passes, per model (default 1, as the reference code and every
#: SmolLM2 study run). Gemma3-270m's runs are all made by warm runners (issue 26) in batches of 8: the same
#: block-sequential statistics up to float rounding, 8x fewer kernel launches (docs/jobs.md)
CALIBRATION_BATCH: dict[str, int] = {"gemma3-270m": 8}
VALIDATION_EVALUATION = {"perplexity": [VALIDATION_DATASET], "seqlen": 2048, "limit_windows": None, "batch_size": 8,
                         "zeroshot_tasks": [], "attention": False}
FINAL_EVALUATION = {"perplexity": ["wiki", "lee"], "seqlen": 2048, "limit_windows": None, "batch_size": 8,
                    "zeroshot_tasks": ["wiki_cloze"], "attention": False}
ZEROSHOT_TASK = "wiki_cloze"
DEPTH_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
OURS = "ours"
#: joins a family and the knobs of its final runs that validation did not choose (summarize)
UNCHOSEN = "~"
#: tags of the CPU runs on wiki:validation with a small budget (16 x 2048 calibration, 24 windows) that
#: were made to decide what to spend GPU time on; never part of the study's table (:func:`proxy_report`)
PROXY_TAGS: tuple[str, ...] = ("proxy-depth-mix", "proxy-gemma")


@dataclass(frozen=True)
class Family:
    """One allocation family: the settings that define it, its variants (each one's further fixed
    settings; the candidates are variants x the knob grid) and the grid of its knobs (dotted keys)."""

    name: str
    label: str
    fixed: dict[str, Any]
    knobs: dict[str, tuple[float, ...]] = field(default_factory=dict)
    variants: tuple[dict[str, Any], ...] = ({},)

    def variant_text(self, variant: dict[str, Any]) -> str:
        """The settings that tell ``variant`` apart from the family's other variants
        ("preset=all, metric_mix=alpha_peak"); "" for a family of one variant."""
        return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in variant.items()
                         if any(other.get(k) != v for other in self.variants))


FAMILIES: tuple[Family, ...] = (
    Family("uniform", "uniform", {"allocation.strategy": "uniform"}),
    Family("owl", "OWL", {"allocation.strategy": "owl"},
           {"allocation.owl_threshold_m": (5.0, 7.0), "allocation.owl_lambda": (0.04, 0.08, 0.12)}),
    Family("alpha_peak", "AlphaPruning α_peak",
           {"allocation.strategy": "linear", "allocation.preset": "all", "allocation.metric": "alpha_peak"},
           {"allocation.epsilon": (0.1, 0.2, 0.3)}),
    Family("dlp", "DLP", {"allocation.strategy": "dlp"}, {"allocation.dlp_alpha": (0.05, 0.1, 0.15, 0.2)}),
    Family("depth", "ATP depth", {"allocation.strategy": "depth"}),  # beta depends on S and L: depth_knobs
    Family("hessian_alpha", "all · Hessian α",
           {"allocation.strategy": "linear", "allocation.preset": "all", "allocation.metric": "hessian_alpha"},
           {"allocation.epsilon": (0.1, 0.2, 0.3)}),
    # the split variant's keys keep the order of the first validation batch (its sweep lines are unchanged)
    Family(OURS, "ours: Hessian α (split, or mixed with weight α or with depth)", {"allocation.strategy": "linear"},
           {"allocation.epsilon": (0.1, 0.2, 0.3, 0.4)},
           ({"allocation.preset": "split", "allocation.metric": "hessian_alpha"},
            {"allocation.preset": "all", "allocation.metric": "hessian_alpha", "allocation.metric_mix": "alpha_peak"},
            {"allocation.preset": "all", "allocation.metric": "hessian_alpha", "allocation.metric_mix": "depth"})),
)
FAMILY_BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}


@dataclass(frozen=True)
class Candidate:
    """One validation run: a family's variant and knob values at one (method, sparsity)."""

    method: str
    sparsity: float
    family: str
    knobs: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)  # e.g. depth's fraction f of the legal beta
    variant: dict[str, Any] = field(default_factory=dict)  # one of the family's variants

    @property
    def settings(self) -> dict[str, Any]:
        """The allocation settings of this run: the family's fixed ones, the variant's, the knobs."""
        return {**FAMILY_BY_NAME[self.family].fixed, **self.variant, **self.knobs}

    @property
    def overrides(self) -> dict[str, Any]:
        """Dotted-key overrides of the study's base config that make this run."""
        return {"pruning.method": self.method, "pruning.sparsity": self.sparsity, **self.settings}


# ---- the protocol ---------------------------------------------------------------------------

def depth_beta(fraction: float, sparsity: float, layers: int) -> float:
    """ATP's common difference per block: ``fraction`` of the largest legal beta
    min(2S, 2(1-S)) / (L-1) (beyond it the progression S - beta (L-1)/2 + beta i leaves [0, 1];
    ATP's search.sh stops there), rounded to 6 decimals. Huang et al., ICML 2025, arXiv:2502.14770."""
    if layers < 2:
        raise ValueError(f"layers: {layers} is invalid; ATP's slope needs at least 2 blocks")
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity: {sparsity} is invalid; accepted: (0, 1)")
    return round(fraction * _largest_depth_beta(sparsity, layers), 6)


def _largest_depth_beta(sparsity: float, layers: int) -> float:
    return min(2 * sparsity, 2 * (1 - sparsity)) / (layers - 1)


def depth_fraction(beta: float, sparsity: float, layers: int) -> float:
    """The inverse of :func:`depth_beta` (before its rounding): ``beta`` as a fraction of the largest legal one."""
    return beta / _largest_depth_beta(sparsity, layers)


def family_candidates(family: Family, method: str, sparsity: float, layers: int) -> list[Candidate]:
    """The family's variants x knob grid at (method, sparsity), in grid order (the variant varies
    slowest, then the first key)."""
    if family.name == "depth":
        return [Candidate(method, sparsity, family.name, {"allocation.depth_beta": depth_beta(f, sparsity, layers)},
                          {"depth_fraction": f, "layers": layers}) for f in DEPTH_FRACTIONS]
    keys = list(family.knobs)
    return [Candidate(method, sparsity, family.name, dict(zip(keys, values)), variant=dict(variant))
            for variant in family.variants for values in itertools.product(*(family.knobs[k] for k in keys))]


def candidates(layers: int) -> list[Candidate]:
    """Every validation candidate, ordered by method, sparsity, family, then variant and knob grid
    (33 per cell)."""
    return [c for method in METHODS for sparsity in SPARSITIES for family in FAMILIES
            for c in family_candidates(family, method, sparsity, layers)]


def calibration_for(model: str) -> dict[str, Any]:
    """The calibration section of ``model``'s study runs (:data:`CALIBRATION`, with its batch size)."""
    batch = CALIBRATION_BATCH.get(model, 1)
    return {**CALIBRATION, **({"batch_size": batch} if batch != 1 else {})}


def validation_base(model: str) -> dict[str, Any]:
    """The RunConfig mapping every validation run starts from."""
    return {"model": {"name": model, "device": "cuda"}, "calibration": calibration_for(model),
            "evaluation": dict(VALIDATION_EVALUATION), "tags": [STUDY_TAG, VALIDATION_TAG]}


def final_base(model: str) -> dict[str, Any]:
    """The RunConfig mapping every final run starts from (wiki test, lee, wiki_cloze)."""
    return {"model": {"name": model, "device": "cuda"}, "calibration": calibration_for(model),
            "evaluation": dict(FINAL_EVALUATION), "tags": [STUDY_TAG, FINAL_TAG]}


def model_layers(model: str, layers: int | None = None) -> int:
    """Number of transformer blocks of ``model``: from its config.json (``num_hidden_layers``, or
    ``text_config.num_hidden_layers``) when the model is prepared here, else ``layers``; both
    given and different is an error."""
    from pruning.models import resolve_model

    found: int | None = None
    try:
        source = resolve_model(model)
        config_path = Path(source.location) / "config.json"
        if source.kind in ("alias", "local") and config_path.is_file():
            cfg = json.loads(config_path.read_text())
            found = cfg.get("num_hidden_layers") or (cfg.get("text_config") or {}).get("num_hidden_layers")
    except Exception as exc:  # ModelNotFoundError, unreadable JSON: fall back to --layers
        log.info("model %s: no readable config.json here (%s)", model, exc)
    if found is not None and layers is not None and int(found) != layers:
        raise ValueError(f"--layers {layers} contradicts {model}'s config.json ({found} blocks)")
    if found is None and layers is None:
        raise ValueError(f"model {model!r}: its config.json is not prepared here; give --layers")
    return int(found if found is not None else layers)  # type: ignore[arg-type]


def _rel(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _flow(value: Any) -> str:
    """One-line YAML of ``value`` (a scalar's document-end marker dropped)."""
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10**6).removesuffix("...\n").strip()


def _sweep_text(header: str, spec: dict[str, Any]) -> str:
    """YAML of a sweep spec in the style of sweeps/grid-smollm2.yaml (one flow mapping per line)."""
    lines = [f"# {line}".rstrip() for line in header.strip().splitlines()]
    lines.append(f"name: {spec['name']}")
    lines.append("base:")
    for key, value in spec["base"].items():
        if key == "evaluation":
            lines.append("  evaluation:")
            lines += [f"    {k}: {_flow(v)}" for k, v in value.items()]
        else:
            lines.append(f"  {key}: {_flow(value)}")
    for key in ("methods", "sparsities"):
        if key in spec:
            lines.append(f"{key}: {_flow(spec[key])}")
    for key in ("variants", "include"):
        if spec.get(key):
            lines.append(f"{key}:")
            lines += [f"  - {_flow(item)}" for item in spec[key]]
    return "\n".join(lines) + "\n"


def _write_sweep(path: Path, header: str, spec: dict[str, Any], expected: list[RunConfig]) -> list[RunConfig]:
    """Write the sweep, read it back and check that it expands to exactly ``expected`` run ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_sweep_text(header, spec))
    configs = expand_sweep(load_sweep_spec(path))
    got, want = [c.run_id for c in configs], [c.run_id for c in expected]
    if sorted(got) != sorted(want) or len(set(want)) != len(want):
        raise RuntimeError(f"{path}: expands to {len(got)} runs, expected the {len(set(want))} distinct study runs")
    return configs


def validation_spec(model: str, layers: int) -> tuple[dict[str, Any], list[Candidate]]:
    """The validation sweep: methods x sparsities x the 25 sparsity-independent candidates
    (``variants``) plus the 16 ATP candidates, whose beta depends on S (``include``)."""
    cands = candidates(layers)
    variants: list[dict[str, Any]] = []
    for c in cands:
        point = c.settings
        if c.family != "depth" and point not in variants:
            variants.append(point)
    include = [c.overrides for c in cands if c.family == "depth"]
    spec = {"name": f"study-validation-{model}", "base": validation_base(model), "methods": list(METHODS),
            "sparsities": list(SPARSITIES), "variants": variants, "include": include}
    return spec, cands


def write_validation(model: str, out: Path, layers: int | None = None) -> list[RunConfig]:
    """Write the validation sweep of ``model`` to ``out``; returns its runs (132 for the protocol: 4 cells x 33)."""
    n_layers = model_layers(model, layers)
    spec, cands = validation_spec(model, n_layers)
    base = RunConfig.from_dict(spec["base"])
    header = f"""Allocation study (issue 16), validation sweep of {model} ({n_layers} blocks), written by
scripts/allocation_study.py validation. Every knob is chosen on the held-out wiki validation split:
calibration on wiki:train (the calibration articles minus the validation ones), perplexity on the whole
wiki:validation split. {len(cands)} runs: {len(METHODS)} methods x {len(SPARSITIES)} sparsities x {len(cands) // 4} candidates
(uniform; OWL M x lambda; AlphaPruning alpha_peak eps; DLP alpha; ATP beta = f min(2S, 2(1-S))/(L-1),
f in {', '.join(map(str, DEPTH_FRACTIONS))}; all Hessian alpha eps; ours = Hessian alpha, preset split, eps;
Hessian alpha mixed with weight alpha_peak, preset all, eps, and Hessian alpha mixed with depth, preset
all, eps). Then: scripts/allocation_study.py choose --model {model}"""
    return _write_sweep(out, header, spec, [base.with_overrides(c.overrides) for c in cands])


# ---- choose ---------------------------------------------------------------------------------

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


def _store_root(store: str | Path | None) -> Path | None:
    return None if store is None else Path(store)


def _tagged_runs(root: Path | None, tag: str) -> pd.DataFrame:
    """The store's runs (kind ``run``, latest attempt, any status) carrying ``tag`` in their config or
    annotations; an empty frame with the columns for an empty store."""
    from pruning.store.queries import LIST_COLUMNS, list_runs

    runs = list_runs(root)
    if runs.empty:
        return pd.DataFrame(columns=LIST_COLUMNS)
    return runs[(runs["kind"] == "run") & runs["tags"].map(lambda tags: tag in tags)].reset_index(drop=True)


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
    out = out or REPO / "docs" / "study" / f"choices-{model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(choices_json(model, n_layers, cells), indent=1) + "\n")
    log.info("wrote %s (%d cells, %d candidates not usable)", out, len(cells), len(bad))
    return cells


# ---- final ----------------------------------------------------------------------------------

def final_spec(choices: dict[str, Any]) -> dict[str, Any]:
    """The final sweep from a choices file: every (method, sparsity, family) with its chosen knobs,
    calibration seeds :data:`FINAL_SEEDS`, the lee-calibrated direction at 70 % (``include``) and one
    dense run (the base, which a sweep always runs as its one product point when it has no axes)."""
    model = choices["model"]
    include: list[dict[str, Any]] = []
    domain: list[dict[str, Any]] = []
    missing = []
    for cell in choices["cells"]:
        chosen = cell.get("chosen")
        if not chosen:
            missing.append(f"{cell['method']} {cell['sparsity']:.0%} {cell['family']}")
            continue
        overrides = {"pruning.method": cell["method"], "pruning.sparsity": cell["sparsity"],
                     **FAMILY_BY_NAME[cell["family"]].fixed, **chosen.get("variant", {}), **chosen["knobs"]}
        seeds = FINAL_SEEDS.get(float(cell["sparsity"]))
        if seeds is None:
            raise ValueError(f"sparsity {cell['sparsity']} has no final seeds; accepted: {sorted(FINAL_SEEDS)}")
        include += [{**overrides, "calibration.seed": seed} for seed in seeds]
        if math.isclose(float(cell["sparsity"]), DOMAIN_SPARSITY):
            domain.append({**overrides, "calibration.dataset": DOMAIN_DATASET, "calibration.seed": DOMAIN_SEED,
                           "tags": [STUDY_TAG, FINAL_TAG, DOMAIN_TAG]})
    if missing:
        raise ValueError(f"the choices of {model} have no chosen knobs for: {', '.join(missing)}")
    # a sweep of includes only still has its one product point, the base itself: make it the dense run
    base = {**final_base(model), "pruning": {"method": "dense", "sparsity": 0.0}}
    return {"name": f"study-final-{model}", "base": base, "include": include + domain}


def calibration_tokens(model: str, datasets: tuple[str, ...] = (DOMAIN_DATASET, CALIBRATION["dataset"])) -> dict[str, int] | None:
    """Tokens of each calibration text under ``model``'s tokenizer (None where the model or the text
    is not prepared here)."""
    try:
        from transformers import AutoTokenizer

        from pruning.data import load_text, tokenize_text
        from pruning.models import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model).location)
        return {ds: int(tokenize_text(tokenizer, load_text(ds, "calib")).numel()) for ds in datasets}
    except Exception as exc:  # no tokenizer or corpus here: the sweep says so instead of a number
        log.warning("token counts of the calibration texts under %s not measured: %s", model, exc)
        return None


def coverage_text(model: str) -> str:
    """How the 128 x 2048 calibration windows cover lee and wiki:train (pruning.data.calibration_batch
    draws start offsets uniformly at random, so windows overlap whenever the text is short)."""
    need = CALIBRATION["nsamples"] * CALIBRATION["seqlen"]
    counts = calibration_tokens(model)
    lines = (f"The sampler (pruning.data.calibration_batch) draws {CALIBRATION['nsamples']} windows at uniform random "
             f"offsets, so windows overlap where the text holds fewer than {CALIBRATION['nsamples']} x "
             f"{CALIBRATION['seqlen']} = {need:,} tokens")
    if counts is None:
        return lines + " (token counts not measured here)"
    return lines + ": " + "; ".join(f"{ds} holds {n:,} tokens under the {model} tokenizer, each seen "
                                    f"~{need / n:.1f} times on average" for ds, n in counts.items())


def write_final(model: str, choices_path: Path, out: Path) -> list[RunConfig]:
    """Write the final sweep of ``model`` from its choices file; returns its runs."""
    if not choices_path.is_file():
        raise ValueError(f"{_rel(choices_path)} does not exist; run `scripts/allocation_study.py choose --model {model}` first")
    choices = json.loads(choices_path.read_text())
    if choices.get("model") != model:
        raise ValueError(f"{choices_path} holds the choices of {choices.get('model')!r}, not {model!r}")
    spec = final_spec(choices)
    base = RunConfig.from_dict(spec["base"])
    n = len(spec["include"]) + 1
    header = textwrap.fill(
        f"Allocation study (issue 16), final sweep of {model}, written by scripts/allocation_study.py final from "
        f"{_rel(choices_path)} (knobs chosen on wiki:validation only). Whole wiki test split and lee text at seqlen "
        f"2048, wiki_cloze zero-shot. Calibration wiki:train, seed 0 at 60 %, seeds 0, 1, 2 at 70 %. "
        f"Calibration-domain direction (tag {DOMAIN_TAG}): 70 %, seed 0, calibrated on lee and read on wiki test. "
        f"{coverage_text(model)}. Same 128 x 2048 budget as the wiki runs, only the domain changes. lee has no "
        f"held-out split: the lee perplexity of a lee-calibrated run is in-sample and is not reported. {n} runs: "
        f"the base itself is the dense run, every other run is an include.", width=110)
    return _write_sweep(out, header, spec, [base] + [base.with_overrides(o) for o in spec["include"]])


# ---- table ----------------------------------------------------------------------------------

def family_of(config: RunConfig) -> str | None:
    """The study family of a stored config (``dense`` for the dense run), None for another allocation."""
    alloc = config.allocation
    if config.pruning.method == "dense":
        return "dense"
    if alloc.strategy in ("uniform", "owl", "dlp", "depth"):
        return alloc.strategy
    if alloc.strategy == "linear" and tuple(alloc.score_groups) == MATRIX_TYPES:
        block, metrics = alloc.granularity == "block", alloc.metrics
        if block and metrics in (("alpha_peak",), ("hessian_alpha",)):
            return alloc.metric
        if (alloc.granularity == "split" and metrics == ("hessian_alpha",)) or (
                block and metrics in (("hessian_alpha", "alpha_peak"), ("hessian_alpha", "depth"))):
            return OURS
    return None


def chosen_final_ids(model: str, choices_dir: Path | None = None) -> set[str] | None:
    """Run ids of the final sweep that ``model``'s choices file (``docs/study/choices-MODEL.json``)
    gives, None when there is no such file. A final run outside this set was made with knobs that
    validation did not choose in the end (e.g. the first version of ours, before its second variant
    was validated): it is reported on its own rows and never compared."""
    path = (choices_dir or REPO / "docs" / "study") / f"choices-{model}.json"
    if not path.is_file():
        return None
    spec = final_spec(json.loads(path.read_text()))
    base = RunConfig.from_dict(spec["base"])
    return {base.run_id} | {base.with_overrides(o).run_id for o in spec["include"]}


def knob_text(config: RunConfig) -> str:
    """The allocation knobs of a study run in the choices' words, e.g. ``preset=split, epsilon=0.1``."""
    a = config.allocation
    if a.strategy == "owl":
        return f"owl_threshold_m={a.owl_threshold_m:g}, owl_lambda={a.owl_lambda:g}"
    if a.strategy == "dlp":
        return f"dlp_alpha={a.dlp_alpha:g}"
    if a.strategy == "depth":
        return f"depth_beta={a.depth_beta:g}"
    if a.strategy == "linear":
        mix = f", metric_mix={a.metric_mix}" if a.metric_mix else ""
        return f"preset={a.preset or a.granularity}, metric={a.metric}{mix}, epsilon={a.epsilon:g}"
    return "—"


def study_runs(store: str | Path | None = None, choices_dir: Path | None = None) -> pd.DataFrame:
    """One row per run tagged ``allocation-study``: run_id, status, phase (validation | final |
    domain), model, method, sparsity, family, seed, seconds (the run's ``timings.total``), and for
    final runs wiki, lee (pruned perplexity, whole text, seqlen 2048) and wiki_cloze (acc, 0-shot,
    every example), chosen (False for a final run outside its model's chosen final sweep,
    :func:`chosen_final_ids`) and knobs (:func:`knob_text`). The dense run's values are its dense stage."""
    from pruning.store.queries import perplexity_cells, run_sql, zeroshot_scores

    root = _store_root(store)
    runs = _tagged_runs(root, STUDY_TAG)
    columns = ["run_id", "status", "phase", "model", "method", "sparsity", "family", "seed", "seconds",
               "chosen", "knobs", "wiki", "lee", ZEROSHOT_TASK]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    ids = set(runs["run_id"])
    raw = run_sql("SELECT run_id, config_json, timings_json FROM runs WHERE kind = 'run'", root)
    raw = raw[raw["run_id"].isin(ids)].set_index("run_id")
    rows = []
    chosen_ids: dict[str, set[str] | None] = {}
    for r in runs.itertuples():
        config = RunConfig.from_dict(json.loads(raw.at[r.run_id, "config_json"]))
        model = config.model.name
        if model not in chosen_ids:
            chosen_ids[model] = chosen_final_ids(model, choices_dir)
        timings = json.loads(raw.at[r.run_id, "timings_json"] or "{}")
        tags = set(r.tags)
        phase = "validation" if VALIDATION_TAG in tags else "domain" if DOMAIN_TAG in tags else "final"
        chosen_here = chosen_ids[model]
        chosen = phase == "validation" or chosen_here is None or r.run_id in chosen_here
        rows.append({"run_id": r.run_id, "status": r.status, "phase": phase, "model": model,
                     "method": config.pruning.method, "sparsity": config.pruning.sparsity, "family": family_of(config),
                     "seed": config.calibration.seed, "seconds": timings.get("total", float("nan")),
                     "chosen": chosen, "knobs": knob_text(config)})
    df = pd.DataFrame(rows)
    cells = perplexity_cells(stage=None, root=root)
    cells = cells[cells["run_id"].isin(ids) & cells["dataset"].isin(["wiki", "lee"]) & (cells["seqlen"] == 2048)
                  & ~cells["budgeted"].astype(bool)]
    cells = cells[(cells["stage"] == "pruned") | (cells["method"] == "dense")]
    _refuse_mixed_protocols(cells, ["model", "dataset"], "the study runs")  # token counts differ per tokenizer
    ppl = cells.pivot_table(index="run_id", columns="dataset", values="ppl", aggfunc="first")
    zs = zeroshot_scores(sorted(ids), root)
    if not zs.empty:  # columns that are null in every row are left out of the query's frame
        limit = zs["limit"] if "limit" in zs.columns else pd.Series(float("nan"), index=zs.index)
        fewshot = zs["num_fewshot"] if "num_fewshot" in zs.columns else pd.Series(0, index=zs.index)
        zs = zs[(zs["task"] == ZEROSHOT_TASK) & (zs["metric"] == "acc") & limit.isna() & (fewshot.fillna(0) == 0)
                & ((zs["stage"] == "pruned") | (zs["method"] == "dense"))]
    acc = zs.groupby("run_id")["value"].first() if not zs.empty else pd.Series(dtype=float)
    for col in ("wiki", "lee"):
        df[col] = df["run_id"].map(ppl[col]) if col in ppl.columns else float("nan")
    df[ZEROSHOT_TASK] = df["run_id"].map(acc)
    return df[columns]


def _refuse_mixed_protocols(cells: pd.DataFrame, by: list[str], what: str) -> None:
    """RuntimeError naming the group when one group of ``cells`` (perplexity_cells rows) holds more
    than one evaluation protocol: a table of it would mix them."""
    for key, grp in cells.groupby(by):
        protocols = sorted(set(grp["protocol"]))
        if len(protocols) > 1:
            name = " ".join(map(str, key if isinstance(key, tuple) else (key,)))
            raise RuntimeError(f"{name}: {what} hold {len(protocols)} protocols {protocols}; the table would mix them")


def _stats(values: pd.Series) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; NaN for one value) and count of the finite values."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    return (float(v.mean()) if len(v) else float("nan"), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), len(v))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (model, method, sparsity, family) of the succeeded final runs: mean, std (ddof 1) and n over
    the calibration seeds of wiki, lee and wiki_cloze, and the wiki perplexity of the lee-calibrated run."""
    ok = runs[(runs["status"] == "succeeded") & runs["phase"].isin(["final", "domain"]) & runs["family"].notna()].copy()
    if "chosen" not in ok.columns:
        ok["chosen"], ok["knobs"] = True, ""
    # runs of knobs that validation did not choose: rows of their own, "family~knobs" (never compared)
    ok["family"] = ok["family"].where(ok["chosen"].astype(bool), ok["family"] + UNCHOSEN)
    keys = ["model", "method", "sparsity", "family"]
    rows = []
    for key, grp in ok.groupby(keys, sort=False):
        final, domain = grp[grp["phase"] == "final"], grp[grp["phase"] == "domain"]
        row = dict(zip(keys, key))
        row["knobs"] = "; ".join(sorted(set(grp["knobs"].dropna()))) if "knobs" in grp.columns else ""
        for col in ("wiki", "lee", ZEROSHOT_TASK):
            row[f"{col}_mean"], row[f"{col}_std"], row[f"{col}_n"] = _stats(final[col])
        row["lee_calibrated_wiki"] = float(domain["wiki"].iloc[0]) if len(domain) else float("nan")
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    order = {f.name: i for i, f in enumerate(FAMILIES)} | {"dense": -1}
    out["_o"] = out["family"].map(lambda f: order[f.split(UNCHOSEN)[0]] + (len(FAMILIES) if UNCHOSEN in f else 0))
    return out.sort_values(["model", "method", "sparsity", "_o"]).drop(columns="_o").reset_index(drop=True)


def _spread(std_a: float, std_b: float) -> float:
    """max of two seed stds; NaN when either is unknown (one seed)."""
    return float("nan") if math.isnan(std_a) or math.isnan(std_b) else max(std_a, std_b)


def beats_by_spread(ours: tuple[float, float], other: tuple[float, float]) -> bool:
    """Whether a lower-is-better ``ours`` (mean, std) beats ``other`` by more than the seed spread:
    mean_other - mean_ours > max(std_ours, std_other)."""
    return other[0] - ours[0] > max(ours[1], other[1])


def verdicts(summary: pd.DataFrame, metric: str = "wiki") -> pd.DataFrame:
    """Per (model, method, sparsity): does ``ours`` beat every other family on ``metric`` (a perplexity)
    by more than the seed spread? Columns: model, method, sparsity, metric, ours, rival (the family
    with the smallest margin over the spread), rival_value, margin (rival mean - ours mean), spread
    (max of the two stds), verdict (``yes``, ``no``, or ``undecided: 1 seed`` where a std is missing,
    ``no data`` without ours; `` (k of 6 rivals)`` appended where families are missing, so such a cell
    never counts as a win), ahead_on_means."""
    rows = []
    if summary.empty:
        return pd.DataFrame(rows)
    pruned = summary[(summary["family"] != "dense") & ~summary["family"].str.contains(UNCHOSEN, regex=False)]
    for (model, method, sparsity), grp in pruned.groupby(["model", "method", "sparsity"], sort=False):
        stats = {f: (r[f"{metric}_mean"], r[f"{metric}_std"], r[f"{metric}_n"]) for f, r in grp.set_index("family").iterrows()}
        row: dict[str, Any] = {"model": model, "method": method, "sparsity": sparsity, "metric": metric}
        ours = stats.get(OURS)
        others = {f: s for f, s in stats.items() if f != OURS and not math.isnan(s[0])}
        if ours is None or math.isnan(ours[0]) or not others:
            rows.append({**row, "verdict": "no data"})
            continue
        spread = {f: _spread(ours[1], s[1]) for f, s in others.items()}
        margin = {f: s[0] - ours[0] for f, s in others.items()}
        # the rival closest to winning: smallest margin beyond the spread (the spread taken as 0 where unknown)
        rival = min(others, key=lambda f: margin[f] - (0.0 if math.isnan(spread[f]) else spread[f]))
        ahead = all(m > 0 for m in margin.values())
        if any(math.isnan(sp) for sp in spread.values()):
            verdict = "undecided: 1 seed"
        else:
            verdict = "yes" if all(beats_by_spread(ours[:2], others[f][:2]) for f in others) else "no"
        n_rivals = len(FAMILIES) - 1
        if len(others) < n_rivals:  # a win is claimed only against every anchor
            verdict += f" ({len(others)} of {n_rivals} rivals)"
        rows.append({**row, "ours": _pm(ours), "rival": rival, "rival_value": _pm(others[rival]),
                     "margin": margin[rival], "spread": spread[rival],
                     "verdict": verdict, "ahead_on_means": ahead})
    return pd.DataFrame(rows)


def _fmt(value: float, key: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if key == ZEROSHOT_TASK:
        return f"{value:.3f}"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.2f}"


def _pm(stats: tuple[float, ...], key: str = "wiki") -> str:
    mean, std, n = stats[0], stats[1], (stats[2] if len(stats) > 2 else None)
    text = _fmt(mean, key)
    if not math.isnan(std):
        text += f" ± {_fmt(std, key) if key == ZEROSHOT_TASK else f'{std:.2f}'}"
    return text + (f" (n={n})" if n is not None else "")


def family_label(family: str) -> str:
    """Table label of a summary family: the family's label, marked for the runs of knobs that
    validation did not choose (``family~``)."""
    name = family.removesuffix(UNCHOSEN)
    label = FAMILY_BY_NAME[name].label
    return f"{label} — *not chosen on validation, not compared*" if family.endswith(UNCHOSEN) else label


def study_table(summary: pd.DataFrame) -> str:
    """Markdown: one row per (model, method, sparsity, family)."""
    out = ["| model | method | sparsity | allocation | knobs (chosen on wiki:validation) | wiki test ppl | lee ppl | "
           "wiki_cloze acc | wiki test ppl, lee-calibrated |", "|---|---|---|---|---|---|---|---|---|"]
    for r in summary.itertuples():
        cells = [_pm((getattr(r, f"{k}_mean"), getattr(r, f"{k}_std"), getattr(r, f"{k}_n")), k)
                 for k in ("wiki", "lee", ZEROSHOT_TASK)]
        label = "dense" if r.family == "dense" else family_label(r.family)
        sparsity = "0%" if r.family == "dense" else f"{r.sparsity:.0%}"
        knobs = "" if r.family == "dense" else getattr(r, "knobs", "")
        out.append(f"| {r.model} | {r.method} | {sparsity} | {label} | {knobs} | " + " | ".join(cells)
                   + f" | {_fmt(r.lee_calibrated_wiki, 'wiki')} |")
    return "\n".join(out)


def verdict_table(table: pd.DataFrame) -> str:
    """Markdown of :func:`verdicts` for several metrics, with the count of cells won."""
    out = ["Does ours beat every other allocation by more than the seed spread? (mean of the rival − mean of ours "
           "> max(std of ours, std of the rival), std over calibration seeds, ddof 1; rival = the family closest to "
           "winning)", "",
           "| model | method | sparsity | text | ours | closest rival | rival | margin | spread | verdict | ahead on means |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        if r.verdict == "no data":
            out.append(f"| {r.model} | {r.method} | {r.sparsity:.0%} | {r.metric} | | | | | | no data | |")
            continue
        label = FAMILY_BY_NAME[r.rival].label
        spread = "" if math.isnan(r.spread) else f"{r.spread:.2f}"
        out.append(f"| {r.model} | {r.method} | {r.sparsity:.0%} | {r.metric} | {r.ours} | {label} | {r.rival_value} | "
                   f"{r.margin:+.2f} | {spread} | {r.verdict} | {'yes' if r.ahead_on_means else 'no'} |")
    out.append("")
    for metric, grp in table.groupby("metric", sort=False):
        undecided = grp["verdict"].str.startswith("undecided").sum()
        incomplete = grp["verdict"].str.contains("rivals)", regex=False).sum()
        out.append(f"- {metric}: ours wins by more than the spread in {(grp['verdict'] == 'yes').sum()} of {len(grp)} "
                   f"(model, method, sparsity) cells ({undecided} undecided with 1 seed, {incomplete} missing some rivals)")
    return "\n".join(out)


def timing_tables(runs: pd.DataFrame, per_run: bool = True) -> str:
    """GPU time from each run's ``timings.total`` (wall seconds of the run in its worker; several
    workers share one GPU, so the sum is worker-seconds, more than the machine's wall time)."""
    out = ["GPU time (each run's timings.total: wall seconds in its worker; workers share the GPU, so sums are "
           "worker-seconds):", "", "| model | phase | runs | mean s/run | min | max | sum (h) |", "|---|---|---|---|---|---|---|"]
    for (model, phase), grp in runs.groupby(["model", "phase"]):
        s = grp["seconds"].dropna()
        out.append(f"| {model} | {phase} | {len(grp)} | {s.mean():.1f} | {s.min():.1f} | {s.max():.1f} | {s.sum() / 3600:.2f} |")
    total = runs["seconds"].dropna()
    out.append(f"| all | all | {len(runs)} | {total.mean():.1f} | {total.min():.1f} | {total.max():.1f} | {total.sum() / 3600:.2f} |")
    if per_run:
        out += ["", "| run_id | model | phase | method | sparsity | family | seed | status | seconds |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in runs.sort_values(["model", "phase", "method", "sparsity", "family", "seed"], na_position="first").itertuples():
            out.append(f"| {r.run_id} | {r.model} | {r.phase} | {r.method} | {r.sparsity:.0%} | {r.family} | {r.seed} | "
                       f"{r.status} | {r.seconds:.1f} |")
    return "\n".join(out)


def study_report(store: str | Path | None = None, per_run: bool = True, choices_dir: Path | None = None) -> str:
    """The whole study section: table, verdicts (wiki test and lee) and GPU time; "" without study runs.
    choices_dir: where the choices files are (default docs/study)."""
    runs = study_runs(store, choices_dir)
    if runs.empty:
        return ""
    summary = summarize(runs)
    parts = ["## Allocation study (issue 16)", ""]
    if not summary.empty:
        verdict = pd.concat([verdicts(summary, "wiki"), verdicts(summary, "lee")], ignore_index=True)
        parts += [study_table(summary), "", verdict_table(verdict), ""]
    parts.append(timing_tables(runs, per_run))
    return "\n".join(parts) + "\n"


# ---- proxy runs -----------------------------------------------------------------------------

def proxy_runs(store: str | Path | None = None) -> pd.DataFrame:
    """The succeeded runs tagged with one of :data:`PROXY_TAGS` and their pruned (dense: dense)
    ``wiki:validation`` perplexity: run_id, model, method, sparsity, allocation, knobs, ppl, windows
    ("24/34"), calibration, seconds. One evaluation protocol per model, or RuntimeError."""
    from pruning.store.queries import perplexity_cells, run_sql

    root = _store_root(store)
    runs = pd.concat([_tagged_runs(root, tag) for tag in PROXY_TAGS], ignore_index=True).drop_duplicates("run_id")
    runs = runs[runs["status"] == "succeeded"]
    columns = ["run_id", "model", "method", "sparsity", "allocation", "knobs", "ppl", "windows", "calibration", "seconds"]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    raw = run_sql("SELECT run_id, config_json, timings_json FROM runs WHERE kind = 'run'", root).set_index("run_id")
    # the model's depth as the run pruned it (its allocation's blocks), so no model need be prepared here
    blocks = run_sql("SELECT run_id, max(block) + 1 AS layers FROM allocation GROUP BY run_id", root)
    layers_of = dict(zip(blocks["run_id"], blocks["layers"]))
    cells = perplexity_cells(stage=None, root=root)
    cells = cells[cells["run_id"].isin(set(runs["run_id"])) & (cells["dataset"] == VALIDATION_DATASET)]
    cells = cells[(cells["stage"] == "pruned") | (cells["method"] == "dense")]
    _refuse_mixed_protocols(cells, ["model"], "the proxy runs")
    by_run = cells.set_index("run_id")
    rows = []
    for run_id in runs["run_id"]:
        if run_id not in by_run.index:
            continue
        cell = by_run.loc[run_id]
        config = RunConfig.from_dict(json.loads(raw.at[run_id, "config_json"]))
        family = family_of(config)
        if family == "dense":
            allocation = "dense"
        elif family == OURS and config.allocation.metric_mix == "depth":
            allocation = "Hessian α + depth (ours, third variant)"
        elif family is not None:
            allocation = FAMILY_BY_NAME[family].label
        else:
            allocation = config.allocation.strategy
        knobs = "" if family == "dense" else knob_text(config)
        if config.allocation.strategy == "depth":
            fraction = depth_fraction(config.allocation.depth_beta, config.pruning.sparsity, int(layers_of[run_id]))
            knobs += f" (f={fraction:.2f})"
        c = config.calibration
        rows.append({"run_id": run_id, "model": config.model.name, "method": config.pruning.method,
                     "sparsity": config.pruning.sparsity, "allocation": allocation, "knobs": knobs,
                     "ppl": float(cell["ppl"]), "windows": f"{int(cell['n_windows'])}/{int(cell['total_windows'])}",
                     "calibration": f"{c.dataset} {c.nsamples} × {c.seqlen}, seed {c.seed}",
                     "seconds": json.loads(raw.at[run_id, "timings_json"] or "{}").get("total", float("nan"))})
    return pd.DataFrame(rows, columns=columns).sort_values(["model", "method", "sparsity", "ppl"], ignore_index=True)


def proxy_report(store: str | Path | None = None) -> str:
    """Markdown of :func:`proxy_runs`, with each run's change against the uniform run of its (model,
    method, sparsity) where there is one; "" without proxy runs."""
    runs = proxy_runs(store)
    if runs.empty:
        return ""
    uniform = runs[runs["allocation"] == FAMILY_BY_NAME["uniform"].label].set_index(["model", "method", "sparsity"])["ppl"]
    out = ["| model | method | sparsity | allocation | knobs | wiki:validation ppl | vs uniform | windows | calibration | CPU min |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs.itertuples():
        base = uniform.get((r.model, r.method, r.sparsity))
        plain = base is None or r.method == "dense" or r.allocation == FAMILY_BY_NAME["uniform"].label
        change = "" if plain else f"{(r.ppl - base) / base:+.1%}"
        sparsity = "0%" if r.method == "dense" else f"{r.sparsity:.0%}"
        out.append(f"| {r.model} | {r.method} | {sparsity} | {r.allocation} | {r.knobs} | {r.ppl:.2f} | {change} | "
                   f"{r.windows} | {r.calibration} | {r.seconds / 60:.1f} |")
    return "\n".join(out) + "\n"


# ---- CLI ------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validation", help="write the validation sweep")
    v.add_argument("--model", required=True)
    v.add_argument("--layers", type=int, help="number of blocks, when the model's config.json is not here")
    v.add_argument("--out", type=Path)
    c = sub.add_parser("choose", help="choose every family's knobs on the validation runs in the store")
    c.add_argument("--model", required=True)
    c.add_argument("--layers", type=int)
    c.add_argument("--store", help="store root (default: the data directory's store, data/store)")
    c.add_argument("--out", type=Path)
    c.add_argument("--allow-missing", action="store_true", help="choose among the candidates that are there")
    c.add_argument("--all", action="store_true", help="also print every candidate")
    f = sub.add_parser("final", help="write the final sweep from the choices")
    f.add_argument("--model", required=True)
    f.add_argument("--choices", type=Path)
    f.add_argument("--out", type=Path)
    t = sub.add_parser("table", help="print the study table, the verdicts and the GPU time from the store")
    t.add_argument("--store")
    t.add_argument("--no-per-run", action="store_true", help="GPU time summary only")
    t.add_argument("--choices-dir", type=Path, help="folder of the choices-MODEL.json files (default docs/study)")
    x = sub.add_parser("proxy", help="print the CPU proxy runs (small budget, wiki:validation) from the store")
    x.add_argument("--store")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "validation":
            out = args.out or REPO / "sweeps" / f"study-validation-{args.model}.yaml"
            configs = write_validation(args.model, out, args.layers)
            print(f"wrote {_rel(out)}: {len(configs)} runs")
        elif args.command == "choose":
            cells = choose(args.model, args.store, args.out, args.layers, args.allow_missing)
            print(choices_markdown(cells))
            if args.all:
                print()
                print(choices_markdown(cells, every=True))
        elif args.command == "final":
            choices = args.choices or REPO / "docs" / "study" / f"choices-{args.model}.json"
            out = args.out or REPO / "sweeps" / f"study-final-{args.model}.yaml"
            configs = write_final(args.model, choices, out)
            print(f"wrote {_rel(out)}: {len(configs)} runs")
        elif args.command == "proxy":
            print(proxy_report(args.store) or f"no run tagged {' or '.join(PROXY_TAGS)} in the store")
        else:
            report = study_report(args.store, per_run=not args.no_per_run, choices_dir=args.choices_dir)
            print(report or f"no run tagged {STUDY_TAG!r} in the store")
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
