"""The allocation study's protocol (issue 16): the families, their knob grids, the candidates, the
tags, calibration and evaluation of the validation and final runs, and the mapping of a stored
config back to its family.

Every knob of every allocation family (OWL's M and lambda, AlphaPruning's and Hessian alpha's
epsilon, DLP's alpha, ATP's beta, the team's own epsilon) is chosen per (method, sparsity) on the
held-out ``wiki:validation`` split, calibrating on ``wiki:train`` (the calibration articles minus
the validation ones), so neither the validation nor the test text is ever calibrated on. The final
sweep then reads the wiki ``test`` split and ``lee`` once, with 3 calibration seeds at 70 %, and
calibrates on ``lee`` in the other direction.

Families (:data:`FAMILIES`): ``uniform``; ``owl`` (Yin et al. 2023); ``alpha_peak`` (AlphaPruning,
Lu et al. 2024: linear, preset ``all``, metric ``alpha_peak``); ``dlp`` (Chen et al., ICML 2025);
``depth`` (ATP, Huang et al., ICML 2025: beta = f min(2S, 2(1-S)) / (L-1), the largest legal common
difference scaled by f); ``hessian_alpha`` (the notes' "all · Hessian α": linear, preset ``all``,
metric ``hessian_alpha``); ``ours``, three variants chosen between on validation like any knob:
Hessian alpha per sub-block (preset ``split``), Hessian alpha mixed with the weight ``alpha_peak``
per block (``metric_mix`` alpha_peak), and Hessian alpha mixed with depth (``metric_mix`` depth),
each with epsilon 0.1 ... 0.4 (docs/allocation.md).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pruning.config.run_config import RunConfig
from pruning.paths import REPO_ROOT
from pruning.config.presets import MATRIX_TYPES

log = logging.getLogger(__name__)

#: where the choices files (choices-MODEL.json / .md) live
CHOICES_DIR = REPO_ROOT / "docs" / "study"

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
#: windows per evaluation forward, per model (default 8). Gemma3-270m's 262k-token vocabulary makes a batch of
#: 8 x 2048 float32 logits 17 GB (about 50 GB with the loss's copies): 2 keeps eight workers on one GPU
EVALUATION_BATCH: dict[str, int] = {"gemma3-270m": 2}
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


def evaluation_for(model: str, evaluation: dict[str, Any]) -> dict[str, Any]:
    """``evaluation`` (:data:`VALIDATION_EVALUATION` or :data:`FINAL_EVALUATION`) with ``model``'s batch size
    (:data:`EVALUATION_BATCH`)."""
    return {**evaluation, "batch_size": EVALUATION_BATCH.get(model, evaluation["batch_size"])}


def validation_base(model: str) -> dict[str, Any]:
    """The RunConfig mapping every validation run starts from."""
    return {"model": {"name": model, "device": "cuda"}, "calibration": calibration_for(model),
            "evaluation": evaluation_for(model, VALIDATION_EVALUATION), "tags": [STUDY_TAG, VALIDATION_TAG]}


def final_base(model: str) -> dict[str, Any]:
    """The RunConfig mapping every final run starts from (wiki test, lee, wiki_cloze)."""
    return {"model": {"name": model, "device": "cuda"}, "calibration": calibration_for(model),
            "evaluation": evaluation_for(model, FINAL_EVALUATION), "tags": [STUDY_TAG, FINAL_TAG]}


def model_layers(model: str, layers: int | None = None) -> int:
    """Number of transformer blocks of ``model``: from its config.json (``num_hidden_layers``, or
    ``text_config.num_hidden_layers``) when the model is prepared here, else ``layers``; both
    given and different is an error."""
    from pruning.model.load import resolve_model

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
