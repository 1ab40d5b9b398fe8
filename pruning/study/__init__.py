"""The allocation study (issue 16): its protocol, sweeps, knob choice, results and tables.

``scripts/allocation_study.py`` is its command line; the Study page (``pages/study.py``) and
docs/FINDINGS.md (``scripts/findings_tables.py``) read the same functions. Submodules:
:mod:`~pruning.study.protocol` (families, candidates, tags, calibration and evaluation),
:mod:`~pruning.study.sweeps` (the validation and final sweep files), :mod:`~pruning.study.choose`
(knobs chosen on ``wiki:validation``), :mod:`~pruning.study.results` (runs, mean ± std over seeds,
verdicts) and :mod:`~pruning.study.tables` (markdown).
"""

from __future__ import annotations

from pruning.study.choose import (
    CandidateResult, CellChoice, choices_json, choices_markdown, choose, choose_cells, pick_lowest,
    validation_results,
)
from pruning.study.protocol import (
    CALIBRATION, CALIBRATION_BATCH, CHOICES_DIR, DEPTH_FRACTIONS, DOMAIN_DATASET, DOMAIN_SEED, DOMAIN_SPARSITY,
    DOMAIN_TAG, FAMILIES, FAMILY_BY_NAME, FINAL_EVALUATION, FINAL_SEEDS, FINAL_TAG, METHODS, OURS, PROXY_TAGS,
    SPARSITIES, STUDY_TAG, UNCHOSEN, VALIDATION_DATASET, VALIDATION_EVALUATION, VALIDATION_TAG, ZEROSHOT_TASK,
    Candidate, Family, calibration_for, candidates, depth_beta, depth_fraction, family_candidates, family_of,
    final_base, knob_text, model_layers, validation_base,
)
from pruning.study.results import beats_by_spread, proxy_runs, study_runs, summarize, verdicts
from pruning.study.sweeps import (
    calibration_tokens, chosen_final_ids, coverage_text, final_spec, validation_spec, write_final, write_validation,
)
from pruning.study.tables import family_label, proxy_report, study_report, study_table, timing_tables, verdict_table

__all__ = [
    "CALIBRATION", "CALIBRATION_BATCH", "CHOICES_DIR", "DEPTH_FRACTIONS", "DOMAIN_DATASET", "DOMAIN_SEED",
    "DOMAIN_SPARSITY", "DOMAIN_TAG", "FAMILIES", "FAMILY_BY_NAME", "FINAL_EVALUATION", "FINAL_SEEDS", "FINAL_TAG",
    "METHODS", "OURS", "PROXY_TAGS", "SPARSITIES", "STUDY_TAG", "UNCHOSEN", "VALIDATION_DATASET",
    "VALIDATION_EVALUATION", "VALIDATION_TAG", "ZEROSHOT_TASK", "Candidate", "CandidateResult", "CellChoice", "Family",
    "beats_by_spread", "calibration_for", "calibration_tokens", "candidates", "choices_json", "choices_markdown",
    "choose", "choose_cells", "chosen_final_ids", "coverage_text", "depth_beta", "depth_fraction", "family_candidates",
    "family_label", "family_of", "final_base", "final_spec", "knob_text", "model_layers", "pick_lowest", "proxy_report",
    "proxy_runs", "study_report", "study_runs", "study_table", "summarize", "timing_tables", "validation_base",
    "validation_results", "validation_spec", "verdict_table", "verdicts", "write_final", "write_validation",
]
