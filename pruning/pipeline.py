"""One run, end to end: load -> spectra (cached) -> calibration -> allocation -> prune ->
evaluate -> publish to the results store (DESIGN.md "Data flow of one run").

Library entry point: :func:`execute_run`. The CLI (`python -m pruning run`) and the job workers
call it; progress is reported through a callback as (stage, overall fraction, message). Input
errors are raised before the work starts and publish nothing; a run that raises during the work
is published with status ``failed`` and the error text, then the error propagates, so a crashed
run is never left "running".
"""

from __future__ import annotations

import hashlib
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from pruning.config import RunConfig
from pruning.data import calibration_batch, load_text, tokenize_text
from pruning.evaluation.perplexity import perplexity
from pruning.families import prunable_matrices
from pruning.models import LoadedModel, load_model

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]
# overall progress bands per stage: (start, end)
_BANDS = {"load": (0.0, 0.05), "spectra": (0.05, 0.15), "calibration": (0.15, 0.2), "prune": (0.2, 0.8),
          "evaluation": (0.8, 1.0)}


@dataclass
class RunOutcome:
    """What a run produced: status, tables (tidy DataFrames), timings in seconds."""

    run_id: str
    config: RunConfig
    status: str = "running"
    error: str | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model_fingerprint: str | None = None

    def perplexity_of(self, dataset: str, stage: str = "pruned") -> float:
        """The perplexity on ``dataset`` at ``stage``, or NaN if not evaluated."""
        ppl = self.tables.get("perplexity")
        if ppl is None or ppl.empty:
            return float("nan")
        rows = ppl[(ppl["dataset"] == dataset) & (ppl["stage"] == stage)]
        return float(rows["ppl"].iloc[0]) if len(rows) else float("nan")


class _Reporter:
    """Maps (stage, fraction within the stage) onto the run's overall progress, which never goes
    back: stages do not always run in band order (the dense attention statistics, reported in the
    calibration band, come before the spectra), so a later stage's lower band is held at the
    highest fraction already shown (a job's progress bar went 15 % -> 5 % before)."""

    def __init__(self, progress: ProgressFn | None):
        self.progress = progress
        self.shown = 0.0

    def __call__(self, stage: str, within: float, message: str = "") -> None:
        lo, hi = _BANDS[stage]
        fraction = max(self.shown, lo + (hi - lo) * min(max(within, 0.0), 1.0))
        self.shown = fraction
        log.debug("progress %s %.3f %s", stage, fraction, message)
        if self.progress is not None:
            self.progress(stage, fraction, message)


def sparsity_table(loaded: LoadedModel, config: RunConfig, calib_ids: torch.Tensor | None,
                   report: _Reporter, outcome: RunOutcome) -> pd.DataFrame:
    """Allocation per matrix (columns of pruning.allocation.allocate's output)."""
    from pruning.allocation import allocate

    alloc_cfg = config.allocation
    refs = prunable_matrices(loaded.model, loaded.family)
    matrices = pd.DataFrame(
        {"block": [r.block for r in refs], "matrix_type": [r.matrix_type for r in refs],
         "name": [r.name for r in refs], "numel": [r.numel for r in refs]}
    )
    owl = None
    target = config.pruning.sparsity
    if config.pruning.method == "dense":
        target = 0.0
    want_spectra = (alloc_cfg.strategy == "linear" and target > 0) or config.pruning.method == "dense"
    if want_spectra:
        from pruning import spectral
        from pruning.spectral.esd import eig_dtype_from_name

        eig_dtype = eig_dtype_from_name(alloc_cfg.eig_dtype)
        t0 = time.perf_counter()
        report("spectra", 0.0, "weight spectra")
        weight = spectral.cached_weight_spectra(
            loaded, device=config.model.device, dtype=eig_dtype,
            progress=lambda d, n: report("spectra", 0.5 * d / max(n, 1), f"matrix {d} of {n}"))
        frames = [weight.table]
        if alloc_cfg.metric.startswith("hessian_") and calib_ids is not None:
            report("spectra", 0.5, "Hessian spectra")
            hessian = spectral.cached_hessian_spectra(
                loaded, calib_ids, device=config.model.device, offload=config.model.offload,
                batch_size=config.calibration.batch_size, dtype=eig_dtype,
                progress=lambda d, n: report("spectra", 0.5 + 0.5 * d / max(n, 1), f"Hessian block {d} of {n}"))
            frames.append(hessian.table)
        spectra = pd.concat(frames, ignore_index=True)
        outcome.tables["spectra"] = spectra
        outcome.timings["spectra"] = time.perf_counter() - t0
        report("spectra", 1.0, "spectra done")
        if alloc_cfg.strategy == "linear" and target > 0:
            pivot = spectral.pivot_for_allocation(spectra)
            metric_cols = [c for c in pivot.columns if c not in ("block", "matrix_type", "numel", "model", "source")]
            matrices = matrices.merge(pivot[metric_cols], on="name", how="left")
    elif alloc_cfg.strategy == "owl" and target > 0:
        from pruning.prune import owl_outlier_ratios

        t0 = time.perf_counter()
        report("calibration", 0.0, "OWL outlier statistics")
        owl = owl_outlier_ratios(loaded, calib_ids, alloc_cfg.owl_threshold_m, device=config.model.device,
                                 offload=config.model.offload, batch_size=config.calibration.batch_size,
                                 progress=lambda d, n: report("calibration", d / max(n, 1), f"OWL block {d} of {n}"))
        outcome.timings["owl"] = time.perf_counter() - t0
    return allocate(matrices, alloc_cfg, target, owl)


# The weight statistics are per-head float64 SVDs of small matrices: 2.7 s for SmolLM2 on this CPU,
# while the attention stage took 35-47 s per run on the shared H200 grid with device="cuda" (small
# CUDA SVDs are the likely cause; not profiled there). The attention probabilities still run
# where the model is.
WEIGHT_STATS_DEVICE = "cpu"


def cached_dense_attention(loaded: LoadedModel, tokens: int, dataset: str,
                           device: str = WEIGHT_STATS_DEVICE) -> pd.DataFrame:
    """Attention statistics of the dense model (pruning.attention.attention_table, stage
    ``dense``), cached per model fingerprint, token budget, dataset and device type: every run of
    a grid shares its dense model, and recomputing these took most of a GPU grid run's time."""
    from pruning.attention import attention_table
    from pruning.paths import cache_dir

    dev_type = torch.device(device).type
    path = cache_dir() / "attention" / f"{loaded.fingerprint}-{dataset}-{tokens}-{dev_type}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    table = attention_table(loaded, "dense", tokens=tokens, dataset=dataset, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{time.time_ns()}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: concurrent workers never read a half-written file
    return table


def evaluate_perplexity(loaded: LoadedModel, config: RunConfig, stage: str, report: _Reporter) -> pd.DataFrame:
    """Perplexity on every configured dataset; each row records its protocol: the window budget,
    windows and tokens scored, and the SHA-256 (16 hex) of the text (``pruning.protocol``)."""
    ev = config.evaluation
    rows = []
    bos = loaded.tokenizer.bos_token_id if loaded.family.bos_each_window else None
    for i, dataset in enumerate(ev.perplexity):
        text = load_text(dataset, "test")
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]  # part of the protocol (pruning.protocol)
        ids = tokenize_text(loaded.tokenizer, text)
        res = perplexity(
            loaded.model, ids, ev.seqlen, ev.limit_windows, ev.batch_size, bos, dataset,
            progress=lambda d, n, i=i, name=dataset: report(
                "evaluation", (i + d / max(n, 1)) / max(len(ev.perplexity), 1) * 0.6,
                f"perplexity {name}: window {d} of {n}"),
        )
        rows.append({"stage": stage, **res.to_dict(), "text_digest": digest})
    return pd.DataFrame(rows)


def execute_run(config: RunConfig, progress: ProgressFn | None = None, publish: bool = True) -> RunOutcome:
    """Run ``config`` end to end and (by default) publish it to the results store.

    Deterministic for a given config on the same machine: the seed fixes the calibration
    sample and torch's RNG. Input errors found before the work starts (names, the model
    reference, the device: :func:`pruning.validation.check_before_work`) raise a PruningLabError
    and publish nothing; a failure during the work raises after publishing a ``failed`` run.
    """
    from pruning.validation import check_before_work

    check_before_work(config)
    report = _Reporter(progress)
    outcome = RunOutcome(run_id=config.run_id, config=config)
    started = time.time()
    try:
        torch.manual_seed(config.seed)
        t0 = time.perf_counter()
        report("load", 0.0, f"loading {config.model.name}")
        load_device = "cpu" if config.model.offload else config.model.device
        loaded = load_model(config.model.name, config.model.dtype, load_device, config.model.revision)
        outcome.model_fingerprint = loaded.fingerprint
        outcome.timings["load"] = time.perf_counter() - t0
        report("load", 1.0, "model loaded")

        method = config.pruning.method
        needs_calib = method in ("wanda", "sparsegpt") or (method != "dense" and (
            config.allocation.strategy == "owl"
            or (config.allocation.strategy == "linear" and config.allocation.metric.startswith("hessian_"))))
        calib_ids = None
        if needs_calib and method != "dense":
            t0 = time.perf_counter()
            cal = config.calibration
            report("calibration", 0.0, f"sampling {cal.nsamples} x {cal.seqlen} tokens from {cal.dataset}")
            bos = loaded.tokenizer.bos_token_id if loaded.family.bos_each_window else None
            calib_ids = calibration_batch(loaded.tokenizer, cal.dataset, cal.nsamples, cal.seqlen, cal.seed, bos)
            outcome.timings["calibration_sample"] = time.perf_counter() - t0

        attention_dataset = config.evaluation.perplexity[0] if config.evaluation.perplexity else "wiki"
        if config.evaluation.attention:
            from pruning.attention import attention_table

            report("calibration", 0.5, "attention statistics of the dense model")
            outcome.tables["attention_dense"] = cached_dense_attention(
                loaded, config.evaluation.attention_tokens, attention_dataset)

        alloc = sparsity_table(loaded, config, calib_ids, report, outcome)
        if method != "dense":
            from pruning.prune import prune_model

            t0 = time.perf_counter()
            sparsity_by_name = dict(zip(alloc["name"], alloc["sparsity"].astype(float)))
            achieved = prune_model(
                loaded, method, sparsity_by_name, calib_ids, nm=config.pruning.nm_tuple,
                blocksize=config.pruning.blocksize, percdamp=config.pruning.percdamp,
                device=config.model.device, offload=config.model.offload,
                batch_size=config.calibration.batch_size,
                progress=lambda d, n: report("prune", d / max(n, 1), f"block {d} of {n}"),
            )
            outcome.timings["prune"] = time.perf_counter() - t0
            alloc = alloc.merge(achieved[["name", "sparsity_achieved"]], on="name", how="left")
        else:
            alloc["sparsity_achieved"] = 0.0
        outcome.tables["allocation"] = alloc.rename(columns={"sparsity": "sparsity_target"})
        report("prune", 1.0, "pruned")

        t0 = time.perf_counter()
        stage = "dense" if method == "dense" else "pruned"
        outcome.tables["perplexity"] = evaluate_perplexity(loaded, config, stage, report)
        if config.evaluation.zeroshot_tasks:
            from pruning.evaluation.zeroshot import zeroshot_evaluate

            report("evaluation", 0.6, "zero-shot")
            outcome.tables["zeroshot"] = zeroshot_evaluate(
                loaded.model, loaded.tokenizer, list(config.evaluation.zeroshot_tasks), stage=stage,
                limit=config.evaluation.zeroshot_limit, batch_size=config.evaluation.batch_size,
                seed=config.seed).rows
        if config.evaluation.attention:
            from pruning.attention import attention_table

            report("evaluation", 0.9, "attention statistics")
            pruned = attention_table(loaded, stage, tokens=config.evaluation.attention_tokens,
                                     dataset=attention_dataset, device=WEIGHT_STATS_DEVICE)
            outcome.tables["attention"] = pd.concat([outcome.tables.pop("attention_dense"), pruned], ignore_index=True)
        outcome.timings["evaluation"] = time.perf_counter() - t0
        outcome.timings["total"] = time.time() - started
        outcome.status = "succeeded"
        report("evaluation", 1.0, "done")
    except BaseException as exc:  # noqa: BLE001 - record any failure (incl. KeyboardInterrupt), then re-raise
        outcome.status = "failed"
        outcome.error = f"{exc.__class__.__name__}: {exc}"
        outcome.timings["total"] = time.time() - started
        log.error("run %s failed: %s\n%s", outcome.run_id, outcome.error, traceback.format_exc())
        if publish:
            _publish(outcome, started)
        raise
    if publish:
        _publish(outcome, started)
    return outcome


def _publish(outcome: RunOutcome, started: float) -> Any:
    from pruning.store import publish_outcome

    return publish_outcome(outcome, started_at=started)
