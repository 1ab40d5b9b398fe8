"""Writing the study's sweeps: the validation sweep (every candidate) and the final sweep (each
family's chosen knobs, the calibration seeds, the lee-calibrated direction and the dense run), each
read back and checked to expand to exactly the intended run ids."""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path
from typing import Any

import yaml

from pruning.config.run_config import RunConfig
from pruning.paths import REPO_ROOT
from pruning.study.protocol import (
    CALIBRATION, CHOICES_DIR, DEPTH_FRACTIONS, DOMAIN_DATASET, DOMAIN_SEED, DOMAIN_SPARSITY, DOMAIN_TAG,
    FAMILY_BY_NAME, FINAL_SEEDS, FINAL_TAG, METHODS, SPARSITIES, STUDY_TAG, Candidate, candidates, final_base,
    model_layers, validation_base,
)
from pruning.jobs.sweep import expand_sweep, load_sweep_spec

log = logging.getLogger(__name__)

def _rel(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


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

        from pruning.text.data import load_text, tokenize_text
        from pruning.model.load import resolve_model

        tokenizer = AutoTokenizer.from_pretrained(resolve_model(model).location)
        return {ds: int(tokenize_text(tokenizer, load_text(ds, "calib")).numel()) for ds in datasets}
    except Exception as exc:  # no tokenizer or corpus here: the sweep says so instead of a number
        log.warning("token counts of the calibration texts under %s not measured: %s", model, exc)
        return None


def coverage_text(model: str) -> str:
    """How the 128 x 2048 calibration windows cover lee and wiki:train (pruning.text.data.calibration_batch
    draws start offsets uniformly at random, so windows overlap whenever the text is short)."""
    need = CALIBRATION["nsamples"] * CALIBRATION["seqlen"]
    counts = calibration_tokens(model)
    lines = (f"The sampler (pruning.text.data.calibration_batch) draws {CALIBRATION['nsamples']} windows at uniform "
             f"random offsets, so windows overlap where the text holds fewer than {CALIBRATION['nsamples']} x "
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


def chosen_final_ids(model: str, choices_dir: Path | None = None) -> set[str] | None:
    """Run ids of the final sweep that ``model``'s choices file (``docs/study/choices-MODEL.json``)
    gives, None when there is no such file. A final run outside this set was made with knobs that
    validation did not choose in the end (e.g. the first version of ours, before its second variant
    was validated): it is reported on its own rows and never compared."""
    path = (choices_dir or CHOICES_DIR) / f"choices-{model}.json"
    if not path.is_file():
        return None
    spec = final_spec(json.loads(path.read_text()))
    base = RunConfig.from_dict(spec["base"])
    return {base.run_id} | {base.with_overrides(o).run_id for o in spec["include"]}
