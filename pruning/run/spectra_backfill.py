"""Backfill: store the spectra sets of runs published before runs stored them (issue 18).

A run's ``spectra`` rows hold its metrics but, before spectra sets existed, not its eigenvalues
(they lived in the spectra cache of the machine that ran it). :func:`backfill_spectra` finds every
run whose weight or Hessian rows have no stored set (``pruning.store.queries.spectra_key_of``),
loads the run's model here (CPU by default), takes its spectra through
:func:`pruning.run.spectra_cache.cached_weight_spectra` / :func:`cached_hessian_spectra` (the run's
precision; for Hessians the run's calibration batch, drawn again with its seed), checks that they
are the run's own — every row's lambda_max within :data:`pruning.store.queries_spectra.LAMBDA_MAX_RTOL`
of the run's — and publishes the set (:func:`pruning.run.spectra_cache.publish_spectra`). A model that
is not on this machine, or whose spectra disagree with the run's, is reported and skipped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pruning.config.run_config import RunConfig
from pruning.text.data import calibration_batch
from pruning.model.load import LoadedModel, load_model
from pruning.model.placement import Compute
from pruning.config.precision import DEFAULT_EIG_DTYPE
from pruning.run.spectra_cache import cached_hessian_spectra, cached_weight_spectra, publish_spectra
from pruning.spectral.esd import eig_dtype_from_name
from pruning.spectral.summary import SpectraResult
from pruning.store import queries
from pruning.store.queries_spectra import LAMBDA_MAX_RTOL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillGroup:
    """Runs that share one spectra set: model reference, source, precision and (Hessians) the run
    config's calibration section as sorted JSON ("" for weight spectra)."""

    model: str
    source: str
    eig_dtype: str
    calibration: str
    run_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackfillOutcome:
    """What happened to one group: ``stored`` (a set published), ``present`` (already stored) or
    ``skipped`` (with the reason)."""

    group: BackfillGroup
    status: str
    spectra_key: str | None = None
    reason: str = ""


def missing_spectra(root: Path | str | None = None) -> list[BackfillGroup]:
    """Groups of runs whose weight or Hessian spectra rows have no stored set."""
    sql = """SELECT s.run_id, s.source, any_value(s.eig_dtype) AS eig_dtype, arg_max(s.name, s.lambda_max) AS name,
                    any_value(r.config_json) AS config_json
             FROM spectra s JOIN runs r USING (run_id)
             WHERE r.kind = 'run' AND s.lambda_max > 0 GROUP BY s.run_id, s.source ORDER BY s.run_id, s.source"""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for row in queries.run_sql(sql, root=root).itertuples(index=False):
        if queries.spectra_key_of(row.run_id, row.name, row.source, root=root) is not None:
            continue
        config = json.loads(row.config_json)
        calibration = json.dumps(config.get("calibration", {}), sort_keys=True) if row.source == "hessian" else ""
        groups.setdefault((config["model"]["name"], row.source, row.eig_dtype or DEFAULT_EIG_DTYPE, calibration), []).append(row.run_id)
    return [BackfillGroup(*key, tuple(run_ids)) for key, run_ids in groups.items()]


def _disagreement(result: SpectraResult, run_ids: tuple[str, ...], source: str, root: Path | str | None) -> str:
    """Why ``result`` is not the spectra of these runs ("" when every row's lambda_max agrees)."""
    ours = result.table.set_index("name")["lambda_max"].astype(float)
    for run_id in run_ids:
        rows = queries.run_table(run_id, "spectra", root)
        theirs = rows[rows["source"] == source].set_index("name")["lambda_max"].astype(float)
        common = theirs.index.intersection(ours.index)
        if len(common) != len(theirs):
            return f"run {run_id} has matrices this model lacks: {sorted(set(theirs.index) - set(common))[:3]}"
        rel = np.abs(ours[common] - theirs[common]) / np.abs(theirs[common]).clip(lower=1e-300)
        if len(rel) and float(np.nanmax(rel.to_numpy())) > LAMBDA_MAX_RTOL:
            worst = rel.idxmax()
            return (f"run {run_id}: lambda_max of {worst} is {theirs[worst]:.12g}, recomputed {ours[worst]:.12g} "
                    f"(relative {rel[worst]:.2e} > {LAMBDA_MAX_RTOL:g}): not the same model or calibration")
    return ""


def backfill_spectra(root: Path | str | None = None, device: str = "cpu",
                     progress: Callable[[str], None] | None = None) -> list[BackfillOutcome]:
    """Store the spectra sets missing for the store's runs (see the module docstring); returns one
    outcome per group. ``root``: the store directory (default the data directory's)."""
    outcomes: list[BackfillOutcome] = []
    models: dict[tuple[str, str], LoadedModel | None] = {}
    for group in missing_spectra(root):
        detail = queries.run_detail(group.run_ids[0], root)
        config = RunConfig.from_dict(detail["config"])
        if progress is not None:
            progress(f"{group.source} spectra of {group.model} ({len(group.run_ids)} run(s))")
        mkey = (group.model, config.model.dtype)
        if mkey not in models:
            try:
                models[mkey] = load_model(group.model, config.model.dtype, device, config.model.revision)
            except Exception as exc:  # noqa: BLE001 - any load failure skips the group with its reason
                log.warning("cannot load %s here: %s", group.model, exc)
                models[mkey] = None
        loaded = models[mkey]
        if loaded is None:
            outcomes.append(BackfillOutcome(group, "skipped", reason=f"model {group.model!r} cannot be loaded here"))
            continue
        dtype = eig_dtype_from_name(group.eig_dtype)
        if group.source == "weight":
            result = cached_weight_spectra(loaded, device=device, dtype=dtype, store=root)
        else:
            cal = config.calibration
            bos = loaded.window_bos
            ids = calibration_batch(loaded.tokenizer, cal.dataset, cal.nsamples, cal.seqlen, cal.seed, bos)
            compute = Compute(device, offload=False, batch_size=cal.batch_size)
            result = cached_hessian_spectra(loaded, ids, compute=compute, dtype=dtype, store=root)
        reason = _disagreement(result, group.run_ids, group.source, root)
        if reason:
            log.warning("not storing %s: %s", result.key, reason)
            outcomes.append(BackfillOutcome(group, "skipped", result.key, reason))
            continue
        published = publish_spectra(result, root)
        status = "present" if published is None or published.skipped else "stored"
        outcomes.append(BackfillOutcome(group, status, result.key))
    return outcomes


def outcome_frame(outcomes: list[BackfillOutcome]) -> pd.DataFrame:
    """One row per group: model, source, eig_dtype, runs, status, spectra_key, reason."""
    return pd.DataFrame([{"model": o.group.model, "source": o.group.source, "eig_dtype": o.group.eig_dtype,
                          "runs": len(o.group.run_ids), "status": o.status, "spectra_key": o.spectra_key,
                          "reason": o.reason} for o in outcomes],
                        columns=["model", "source", "eig_dtype", "runs", "status", "spectra_key", "reason"])
