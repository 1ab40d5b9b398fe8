"""Checks of a :class:`~pruning.config.run_config.RunConfig` that need the registries, made before any work.

:class:`RunConfig` bounds every field on construction; the names it holds (corpora, zero-shot
tasks, the allocation metric) are checked here against the registries that define them, at
``submit`` (so a bad name is never queued) and again at the start of ``run`` (so a bad name is an
input error, raised before the model is loaded and never published as a failed run). The model
reference and the device are checked at ``run`` start only: they name things on the machine that
runs the job (:func:`check_before_work`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError

log = logging.getLogger(__name__)


def allocation_metrics() -> tuple[str, ...]:
    """Every metric an allocation can read: the spectral table's metric columns of the weights
    and the same with ``hessian_`` for the layer-wise Hessians (pruning.spectral.pivot_for_allocation),
    and ``depth``, the block index (pruning.allocation.registry.DEPTH_METRIC). Both names lists are
    plain data: a job submit loads neither torch nor pandas for them."""
    from pruning.allocation.registry import DEPTH_METRIC
    from pruning.spectral.columns import METRIC_COLUMNS

    return tuple(METRIC_COLUMNS) + tuple(f"hessian_{m}" for m in METRIC_COLUMNS) + (DEPTH_METRIC,)


def check_dataset(field: str, name: str) -> None:
    """A corpus name from :data:`pruning.text.data.CORPORA`, optionally with a split it holds
    (``wiki:validation``, :func:`pruning.text.data.check_dataset_spec`), or ``text:PATH`` naming an
    existing file."""
    from pruning.text.data import check_dataset_spec

    if name.startswith("text:"):
        path = _local_path(name[5:])
        if not name[5:].strip() or not path.is_file():
            raise ConfigError(f"{field}: {name!r} names no readable file; accepted: text:PATH with an existing "
                              "UTF-8 text file")
        return
    check_dataset_spec(name, field)


def _local_path(text: str) -> Path:
    """The file a ``text:PATH`` corpus opens: resolved as :func:`pruning.text.data.load_text` does
    (``pruning.roots``: relative to the repository root, where the worker runs)."""
    from pruning.roots import resolve_local_path

    return resolve_local_path(text)


def check_names(config: RunConfig) -> None:
    """Check every name in ``config`` against its registry; raises ConfigError naming the field,
    the value and what is accepted. Cheap (no model, no corpus is loaded)."""
    check_dataset("calibration.dataset", config.calibration.dataset)
    for name in config.evaluation.perplexity:
        check_dataset("evaluation.perplexity", name)
    metrics = allocation_metrics()
    for field, metric in zip(("allocation.metric", "allocation.metric_mix"), config.allocation.metrics):
        if metric not in metrics:
            raise ConfigError(f"{field}: {metric!r} is not a spectral metric; accepted: {', '.join(metrics)}")
    if config.evaluation.zeroshot_tasks:
        check_tasks(config.evaluation.zeroshot_tasks)


def check_tasks(tasks: tuple[str, ...]) -> None:
    """Zero-shot task names known to lm-eval (its cached name index) or shipped offline; unlike
    :func:`pruning.evaluation.zeroshot.resolve_tasks` this builds no TaskManager."""
    import difflib

    from pruning.evaluation.zeroshot import OFFLINE_TASKS, PAPER_TASKS, known_task_names

    names = [t.strip() for t in tasks]
    if not all(names):
        raise ConfigError(f"evaluation.zeroshot_tasks: {list(tasks)!r} holds an empty name; accepted: lm-eval "
                          f"task names, e.g. {', '.join(PAPER_TASKS)} or offline {', '.join(OFFLINE_TASKS)}")
    offline = set(OFFLINE_TASKS)
    known = offline if set(names) <= offline else known_task_names() | offline
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "no close match"
            raise ConfigError(f"evaluation.zeroshot_tasks: {name!r} is not an lm-eval task ({hint}); "
                              f"the papers' tasks: {', '.join(PAPER_TASKS)}; offline: {', '.join(OFFLINE_TASKS)}")


def check_before_work(config: RunConfig) -> None:
    """Everything that can be checked before a run loads its model: the names
    (:func:`check_names`), the model reference (alias prepared, directory with config.json, GGUF
    file or hub id) and the device. Raises a PruningLabError subclass naming the bad value."""
    from pruning.model.load import resolve_device, resolve_model

    check_names(config)
    resolve_model(config.model.name)
    if config.model.device != "auto":
        resolve_device(config.model.device)
