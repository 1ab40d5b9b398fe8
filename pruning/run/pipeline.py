"""One run, end to end: load -> spectra (reused when stored) -> calibration -> allocation -> prune ->
evaluate -> publish to the results store (DESIGN.md "Data flow of one run"; docs/ARCHITECTURE.md).

Library entry point: :func:`execute_run`. The CLI (`python -m pruning run`) and the job workers
call it; progress is reported through a callback as (stage, overall fraction, message). Input
errors are raised before the work starts and publish nothing; a run that raises during the work
is published with status ``failed``, the error text and the tables made so far, then the error
propagates, so a crashed run is never left "running". The stages live in :mod:`pruning.run.stages`.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field

import pandas as pd
import torch

from pruning.run import stages
from pruning.config.run_config import RunConfig
from pruning.model.placement import Compute
from pruning.run.stages import ProgressFn, Reporter, Stopwatch
from pruning.store import PublishResult, publish_outcome
from pruning.run.validation import check_before_work
from pruning.run.warm import cuda_in_use

log = logging.getLogger(__name__)


@dataclass
class RunOutcome:
    """What a run produced: status, tables (tidy DataFrames), timings in seconds, the model's and the
    tokenizer's fingerprints, where it ran (``placement``: ``prune`` and ``evaluation`` -> ``gpu`` /
    ``offload`` / ``cuda`` / ``cpu``) and ``peak_gpu_gib``: the most GPU memory this process's caching
    allocator held during the run (``torch.cuda.max_memory_reserved``, GiB: what a worker takes from a shared
    GPU, warm runner's held model included; None when the run used no GPU)."""

    run_id: str
    config: RunConfig
    status: str = "running"
    error: str | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    model_fingerprint: str | None = None
    tokenizer_fingerprint: str | None = None
    placement: dict[str, str] = field(default_factory=dict)
    peak_gpu_gib: float | None = None

    def perplexity_of(self, dataset: str, stage: str = "pruned") -> float:
        """The perplexity on ``dataset`` at ``stage``, or NaN if not evaluated."""
        ppl = self.tables.get("perplexity")
        if ppl is None or ppl.empty:
            return float("nan")
        rows = ppl[(ppl["dataset"] == dataset) & (ppl["stage"] == stage)]
        return float(rows["ppl"].iloc[0]) if len(rows) else float("nan")


def _work(config: RunConfig, outcome: RunOutcome, clock: Stopwatch, report: Reporter, publish: bool) -> None:
    """The run's stages in order; every table goes into ``outcome.tables`` as soon as it exists,
    so a failed run still publishes what it made. Spectra are published as soon as they are made."""
    compute = Compute.from_config(config)
    pruning_run = stages.is_pruning(config)
    torch.manual_seed(config.seed)

    report("load", 0.0, f"loading {config.model.name}")
    with clock("load"):
        loaded = stages.load(config, compute)
    outcome.model_fingerprint = loaded.fingerprint
    outcome.tokenizer_fingerprint = loaded.tokenizer_fingerprint
    report("load", 1.0, "model loaded")

    calib_ids = None
    if stages.wants_calibration(config):
        cal = config.calibration
        report("calibration", 0.0, f"sampling {cal.nsamples} x {cal.seqlen} tokens from {cal.dataset}")
        with clock("calibration_sample"):
            calib_ids = stages.calibration_sample(loaded, config)

    dense_attention = None
    if config.evaluation.attention:
        report("calibration", 0.5, "attention statistics of the dense model")
        with clock("attention_dense"):
            dense_attention = stages.dense_attention(loaded, config.evaluation.attention_tokens,
                                                     stages.attention_dataset(config))
        outcome.tables["attention"] = dense_attention

    spectra_table = None
    if stages.wants_spectra(config):
        with clock("spectra"):
            spectra = stages.spectra(loaded, config, calib_ids, compute, report)
        spectra_table = outcome.tables["spectra"] = spectra.table
        if publish:
            stages.publish_spectra(spectra)
        if spectra.reused:  # the timings say the stage was skipped (issue 18)
            clock.seconds["spectra_reused"] = clock.seconds.pop("spectra")

    alloc = stages.allocation(loaded, config, calib_ids, spectra_table, compute, report, clock)
    if "search_trace" in alloc.attrs:  # EvoPress: fitness per generation (pruning.run.evopress)
        from pruning.run.evopress_trace import trace_table

        outcome.tables["metrics"] = trace_table(alloc.attrs["search_trace"])
    if pruning_run:
        with clock("prune"):
            alloc, outcome.placement["prune"] = stages.prune(loaded, config, alloc, calib_ids, compute, report)
    else:
        alloc = alloc.assign(sparsity_achieved=0.0)
    outcome.tables["allocation"] = stages.allocation_record(alloc)
    report("prune", 1.0, "pruned" if pruning_run else "dense: nothing to prune")

    with clock("evaluation"):
        outcome.placement["evaluation"] = stages.evaluation_placement(loaded, config, compute)
        stage = "pruned" if pruning_run else "dense"
        pruned_attention = dense_attention if pruning_run else None  # a dense run's attention is the dense table
        outcome.tables.update(stages.evaluate(loaded, config, stage, pruned_attention, report))
    report("evaluation", 1.0, "done")


def execute_run(config: RunConfig, progress: ProgressFn | None = None, publish: bool = True) -> RunOutcome:
    """Run ``config`` end to end and (by default) publish it to the results store.

    Deterministic for a given config on the same machine: the seed fixes the calibration
    sample and torch's RNG. Input errors found before the work starts (names, the model
    reference, the device: :func:`pruning.run.validation.check_before_work`) raise a PruningLabError
    and publish nothing; a failure during the work raises after publishing a ``failed`` run.
    """
    check_before_work(config)
    outcome = RunOutcome(run_id=config.run_id, config=config)
    clock = Stopwatch()
    started = time.time()
    if cuda_in_use():  # a warm runner's earlier jobs: this run's peak is its own
        torch.cuda.reset_peak_memory_stats()
    try:
        _work(config, outcome, clock, Reporter(progress), publish)
        outcome.status = "succeeded"
    except BaseException as exc:  # noqa: BLE001 - record any failure (incl. KeyboardInterrupt), then re-raise
        outcome.status = "failed"
        outcome.error = f"{exc.__class__.__name__}: {exc}"
        log.error("run %s failed: %s\n%s", outcome.run_id, outcome.error, traceback.format_exc())
        raise
    finally:
        outcome.timings = {**clock.seconds, "total": time.time() - started}
        if cuda_in_use():
            outcome.peak_gpu_gib = round(torch.cuda.max_memory_reserved() / 2**30, 3)
        if publish:
            _publish(outcome, started)
    return outcome


def _publish(outcome: RunOutcome, started: float) -> PublishResult:
    return publish_outcome(outcome, started_at=started)
