"""The stages of one run (pruning.run.pipeline reads them top to bottom). Each stage takes what it
needs and returns what it makes; none writes into the run's outcome.

load -> calibration sample -> spectra -> allocation statistics (OWL, DLP) -> allocation ->
prune -> evaluation (perplexity, zero-shot, attention). DESIGN.md "Data flow of one run";
docs/ARCHITECTURE.md says where each step lives.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
import torch

from pruning.run import spectra_cache, warm
from pruning.allocation import allocate
from pruning.allocation.registry import strategy_spec
from pruning.atomic import write_parquet_atomic
from pruning.attention import attention_table
from pruning.config.run_config import RunConfig
from pruning.text.data import calibration_batch, load_text, tokenize_text
from pruning.calibration.dense_stats import DenseNorms, dense_norms
from pruning.evaluation.perplexity import perplexity
from pruning.evaluation.zeroshot import zeroshot_evaluate
from pruning.model.families import prunable_matrices
from pruning.methods.registry import needs_calibration, prunes
from pruning.model.load import LoadedModel, load_model
from pruning.paths import cache_dir
from pruning.model.placement import Compute, place_for_inference
from pruning.run.prune import prune_model
from pruning.spectral.esd import eig_dtype_from_name
from pruning.spectral.summary import SpectraResult, pivot_for_allocation

log = logging.getLogger(__name__)

# overall progress bands per stage: (start, end)
BANDS = {"load": (0.0, 0.05), "spectra": (0.05, 0.15), "calibration": (0.15, 0.2), "allocation": (0.2, 0.3),
         "prune": (0.3, 0.8), "evaluation": (0.8, 1.0)}  # allocation: a search's (EvoPress) generations
ProgressFn = Callable[[str, float, str], None]


class Reporter:
    """Maps (stage, fraction within the stage) onto the run's overall progress, which never goes
    back: stages do not always run in band order (the dense attention statistics, reported in the
    calibration band, come before the spectra), so a later stage's lower band is held at the
    highest fraction already shown (a job's progress bar went 15 % -> 5 % before)."""

    def __init__(self, progress: ProgressFn | None):
        self.progress = progress
        self.shown = 0.0

    def __call__(self, stage: str, within: float, message: str = "") -> None:
        lo, hi = BANDS[stage]
        fraction = max(self.shown, lo + (hi - lo) * min(max(within, 0.0), 1.0))
        self.shown = fraction
        log.debug("progress %s %.3f %s", stage, fraction, message)
        if self.progress is not None:
            self.progress(stage, fraction, message)

    def steps(self, stage: str, start: float, end: float, what: str) -> Callable[[int, int], None]:
        """A ``(done, total)`` callback mapped onto ``[start, end]`` of ``stage``."""
        return lambda d, n: self(stage, start + (end - start) * d / max(n, 1), f"{what} {d} of {n}")


@dataclass
class Stopwatch:
    """Seconds per named stage (the run's ``timings``)."""

    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


def is_pruning(config: RunConfig) -> bool:
    """False for a dense (reference) run: no calibration for pruning, no allocation, no pruning."""
    return prunes(config.pruning.method)


def target_sparsity(config: RunConfig) -> float:
    return config.pruning.sparsity if is_pruning(config) else 0.0


def load(config: RunConfig, compute: Compute) -> LoadedModel:
    """The model, on the CPU when blocks may be offloaded (decided later), else on the device."""
    state = warm.current()
    if state is not None:  # a warm runner: the held model with its dense weights restored
        return state.load(config.model.name, config.model.dtype, compute.load_device, config.model.revision)
    return load_model(config.model.name, config.model.dtype, compute.load_device, config.model.revision)


def wants_calibration(config: RunConfig) -> bool:
    """Calibration tokens are needed by the method (Wanda, SparseGPT) or by the allocation's
    statistics (OWL, DLP, Hessian spectra: a ``hessian_*`` metric or metric_mix) of a run that prunes."""
    alloc = config.allocation
    by_allocation = strategy_spec(alloc.strategy).calibration or alloc.wants_hessian
    return is_pruning(config) and (needs_calibration(config.pruning.method) or by_allocation)


def calibration_sample(loaded: LoadedModel, config: RunConfig) -> torch.Tensor:
    """``(nsamples, seqlen)`` token ids drawn with the calibration seed (pruning.text.data)."""
    cal = config.calibration
    bos = loaded.window_bos

    def make() -> torch.Tensor:
        return calibration_batch(loaded.tokenizer, cal.dataset, cal.nsamples, cal.seqlen, cal.seed, bos)

    state = warm.current()
    return make() if state is None else state.calibration_ids((cal.dataset, cal.nsamples, cal.seqlen, cal.seed, bos), make)


def wants_spectra(config: RunConfig) -> bool:
    """Spectra are measured for spectral allocations and for dense runs (the reference spectra)."""
    return not is_pruning(config) or (strategy_spec(config.allocation.strategy).spectra and target_sparsity(config) > 0)


@dataclass
class Spectra:
    """The spectra of a run: one result per source (weight, and Hessian when the metric asks), each
    saying where it came from (``computed``, ``cache`` or ``store``; pruning.run.spectra_cache)."""

    results: list[SpectraResult]

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([r.table for r in self.results], ignore_index=True)

    @property
    def reused(self) -> bool:
        return all(r.origin != "computed" for r in self.results)


def spectra(loaded: LoadedModel, config: RunConfig, calib_ids: torch.Tensor | None, compute: Compute,
            report: Reporter) -> Spectra:
    """Weight spectra (and Hessian spectra for a ``hessian_*`` metric or metric_mix), reused from the results store
    or the local cache when the same model fingerprint, code version and precision are there."""
    eig_dtype = eig_dtype_from_name(config.allocation.eig_dtype)
    report("spectra", 0.0, "weight spectra")
    weight = spectra_cache.cached_weight_spectra(loaded, device=compute.device, dtype=eig_dtype,
                                                 progress=report.steps("spectra", 0.0, 0.5, "matrix"))
    results = [weight]
    if config.allocation.wants_hessian and calib_ids is not None:
        report("spectra", 0.5, "Hessian spectra")
        hessian = spectra_cache.cached_hessian_spectra(
            loaded, calib_ids, compute=compute, dtype=eig_dtype,
            progress=report.steps("spectra", 0.5, 1.0, "Hessian block"))
        results.append(hessian)
    report("spectra", 1.0, "spectra done")
    return Spectra(results)


def publish_spectra(spectra: Spectra) -> None:
    """Store every computed part of ``spectra`` as its spectra set (once per model fingerprint,
    source, precision and calibration; a set already stored is not written again), so that later
    runs anywhere reuse it and the app draws its ESDs without a model (pruning.store.spectra_sets)."""
    for result in spectra.results:
        spectra_cache.publish_spectra(result)


def matrix_table(loaded: LoadedModel) -> pd.DataFrame:
    """One row per prunable matrix: ``block, matrix_type, name, numel``."""
    refs = prunable_matrices(loaded.model, loaded.family)
    return pd.DataFrame({"block": [r.block for r in refs], "matrix_type": [r.matrix_type for r in refs],
                         "name": [r.name for r in refs], "numel": [r.numel for r in refs]})


def allocation(loaded: LoadedModel, config: RunConfig, calib_ids: torch.Tensor | None,
               spectra_table: pd.DataFrame | None, compute: Compute, report: Reporter,
               clock: Stopwatch) -> pd.DataFrame:
    """Target sparsity per matrix (pruning.allocation.allocate) with what its strategy reads: the
    spectra's metrics when the registry says it reads them, and what its ``prepare`` hook measures on
    the model (OWL's outlier ratios, DLP's unimportance, EvoPress's search; pruning.run.allocation_inputs)."""
    alloc, target = config.allocation, target_sparsity(config)
    spec = strategy_spec(alloc.strategy)
    matrices = matrix_table(loaded)
    inputs: dict = {}
    if target > 0 and spec.spectra and spectra_table is not None:
        pivot = pivot_for_allocation(spectra_table)
        metric_cols = [c for c in pivot.columns if c not in ("block", "matrix_type", "numel", "model", "source")]
        matrices = matrices.merge(pivot[metric_cols], on="name", how="left")
    prepare = spec.resolved_prepare()
    if target > 0 and prepare is not None:
        from pruning.run.allocation_inputs import AllocationStep  # it imports this module

        inputs = dict(prepare(AllocationStep(loaded, config, calib_ids, matrices, compute, report, clock)))
    trace = inputs.pop("search_trace", None)
    out = allocate(matrices, alloc, target, family=loaded.family, inputs=inputs)
    if trace is not None:
        out.attrs["search_trace"] = trace  # the pipeline stores it in the run's metrics table
    return out


def dense_statistics(loaded: LoadedModel, calib_ids: torch.Tensor, compute: Compute, report: Reporter,
                     clock: Stopwatch) -> DenseNorms:
    """The dense model's activation norms on this calibration (OWL and DLP read them), measured once
    per (model, calibration ids, device type, batch size) and reused after (pruning.calibration.dense_stats). The
    timings say which: ``dense_stats`` when measured, ``dense_stats_reused`` when looked up."""
    report("calibration", 0.0, "dense block statistics")
    with clock("dense_stats"):
        norms = dense_norms(loaded, calib_ids, compute=compute,
                            progress=report.steps("calibration", 0.0, 1.0, "dense statistics: block"))
    if norms.reused:
        clock.seconds["dense_stats_reused"] = clock.seconds.pop("dense_stats")
    return norms


#: the columns of the allocation a run stores: the matrix, its unit, score and ratio, and its sparsities
ALLOCATION_RECORD: tuple[str, ...] = ("block", "matrix_type", "name", "numel", "unit", "score", "ratio",
                                      "sparsity_target", "sparsity_achieved")


def allocation_record(alloc: pd.DataFrame) -> pd.DataFrame:
    """The allocation table a run stores ``(matrices, ALLOCATION_RECORD)``: ``sparsity`` renamed
    ``sparsity_target``, and without the spectral metric columns a ``linear`` allocation read (they
    are the run's spectra table over again, ~20 KB a run; pruning.store.repack drops them from
    bundles written before)."""
    alloc = alloc.rename(columns={"sparsity": "sparsity_target"})
    return alloc[[c for c in ALLOCATION_RECORD if c in alloc.columns]]


def prune(loaded: LoadedModel, config: RunConfig, alloc: pd.DataFrame, calib_ids: torch.Tensor | None,
          compute: Compute, report: Reporter) -> tuple[pd.DataFrame, str]:
    """Prune in place; returns the allocation with ``sparsity_achieved`` and the placement used."""
    p = config.pruning
    achieved = prune_model(
        loaded, p.method, dict(zip(alloc["name"], alloc["sparsity"].astype(float))), calib_ids, nm=p.nm_tuple,
        blocksize=p.blocksize, percdamp=p.percdamp, compute=compute,
        progress=report.steps("prune", 0.0, 1.0, "block"))
    placement = achieved.attrs.get("placement", "")
    return alloc.merge(achieved[["name", "sparsity_achieved"]], on="name", how="left"), placement


# The weight statistics are per-head float64 SVDs of small matrices: 2.7 s for SmolLM2 on this CPU,
# while the attention stage took 35-47 s per run on the shared H200 grid with device="cuda" (small
# CUDA SVDs are the likely cause; not profiled there). The attention probabilities still run
# where the model is.
WEIGHT_STATS_DEVICE = "cpu"


def dense_attention(loaded: LoadedModel, tokens: int, dataset: str, device: str = WEIGHT_STATS_DEVICE) -> pd.DataFrame:
    """Attention statistics of the dense model (pruning.attention.attention_table, stage
    ``dense``), cached per model fingerprint, token budget, dataset and device type: every run of
    a grid shares its dense model, and recomputing these took most of a GPU grid run's time."""
    dev_type = torch.device(device).type
    path = cache_dir() / "attention" / f"{loaded.fingerprint}-{dataset}-{tokens}-{dev_type}.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    table = attention_table(loaded, "dense", tokens=tokens, dataset=dataset, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(table, path)  # concurrent workers never read a half-written file
    return table


def attention_dataset(config: RunConfig) -> str:
    return config.evaluation.perplexity[0] if config.evaluation.perplexity else "wiki"


def evaluation_placement(loaded: LoadedModel, config: RunConfig, compute: Compute) -> str:
    """Moves the model onto the device for evaluation when it fits there (measured, ``offload:
    auto``); returns where evaluation runs."""
    return place_for_inference(loaded.model, compute, config.evaluation.batch_size, config.evaluation.seqlen)


def evaluation_tokens(loaded: LoadedModel, dataset: str) -> tuple[torch.Tensor, str]:
    """The ``test`` text of ``dataset`` tokenized ``(n,)``, and the SHA-256 (16 hex) of the text, which is
    part of the protocol (``pruning.evaluation.protocol``); a warm runner tokenizes each text once."""

    def make() -> tuple[torch.Tensor, str]:
        text = load_text(dataset, "test")
        return tokenize_text(loaded.tokenizer, text), hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    state = warm.current()
    return make() if state is None else state.tokenized(dataset, make)


def evaluate_perplexity(loaded: LoadedModel, config: RunConfig, stage: str, report: Reporter) -> pd.DataFrame:
    """Perplexity on every configured dataset; each row records its protocol: the window budget,
    windows and tokens scored, and the SHA-256 (16 hex) of the text (``pruning.evaluation.protocol``)."""
    ev = config.evaluation
    rows = []
    bos = loaded.window_bos
    share = 0.6 / max(len(ev.perplexity), 1)
    for i, dataset in enumerate(ev.perplexity):
        ids, digest = evaluation_tokens(loaded, dataset)
        res = perplexity(loaded.model, ids, ev.seqlen, ev.limit_windows, ev.batch_size, bos, dataset,
                         progress=report.steps("evaluation", i * share, (i + 1) * share, f"perplexity {dataset}: window"))
        rows.append({"stage": stage, **res.to_dict(), "text_digest": digest})
    return pd.DataFrame(rows)


def evaluate(loaded: LoadedModel, config: RunConfig, stage: str, dense_attention_table: pd.DataFrame | None,
             report: Reporter) -> dict[str, pd.DataFrame]:
    """Perplexity, zero-shot and attention tables of the (pruned or dense) model."""
    ev = config.evaluation
    tables = {"perplexity": evaluate_perplexity(loaded, config, stage, report)}
    if ev.zeroshot_tasks:
        report("evaluation", 0.6, "zero-shot")
        tables["zeroshot"] = zeroshot_evaluate(loaded.model, loaded.tokenizer, list(ev.zeroshot_tasks), stage=stage,
                                               limit=ev.zeroshot_limit, batch_size=ev.batch_size, seed=config.seed).rows
    if dense_attention_table is not None:
        report("evaluation", 0.9, "attention statistics")
        pruned = attention_table(loaded, stage, tokens=ev.attention_tokens, dataset=attention_dataset(config),
                                 device=WEIGHT_STATS_DEVICE)
        tables["attention"] = pd.concat([dense_attention_table, pruned], ignore_index=True)
    return tables
