"""Zero-shot evaluation through EleutherAI's lm-evaluation-harness (lm-eval 0.4).

The in-memory (possibly pruned) model is wrapped as ``HFLM(pretrained=model, tokenizer=tok)``
and evaluated with ``lm_eval.simple_evaluate``. The papers (Sun et al. 2023, Wanda; Frantar &
Alistarh 2023, SparseGPT; Lu et al. 2024, AlphaPruning) report the seven tasks of
``PAPER_TASKS`` zero-shot and their **mean of ``acc``** (not ``acc_norm``), which is what the
``mean`` row holds. Those tasks need the Hugging Face Hub for their data; offline, use the local
``wiki_cloze`` task (pruning/evaluation/tasks), registered through
``TaskManager(include_path=...)``.

Result rows (docs/CONTRACTS.md ``zeroshot`` table): ``stage, task, metric, filter, value,
stderr, task_version, num_fewshot, limit, harness_version``; settings (batch size, few-shot,
limit, seeds) are also returned with the raw lm-eval results.
"""

from __future__ import annotations

import difflib
import functools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
from torch import nn

from pruning.atomic import write_text_atomic
from pruning.errors import ConfigError, CorpusUnavailableError
from pruning.evaluation.tasks import LOCAL_TASKS, ensure_local_tasks, local_task_dir

log = logging.getLogger(__name__)

PAPER_TASKS: tuple[str, ...] = ("boolq", "rte", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
OFFLINE_TASKS: tuple[str, ...] = tuple(LOCAL_TASKS)
COLUMNS = ["stage", "task", "metric", "filter", "value", "stderr", "task_version", "num_fewshot", "limit", "harness_version"]
MEAN_TASK = "mean"


@dataclass(frozen=True)
class ZeroShotSettings:
    """Everything that affects the numbers; stored with the results."""

    tasks: tuple[str, ...]
    limit: int | float | None = None
    num_fewshot: int = 0
    batch_size: int = 1
    bootstrap_iters: int = 100000
    seed: int = 0
    harness_version: str = ""


@dataclass
class ZeroShotResult:
    """Tidy rows plus the settings and lm-eval's (sample-free) ``results`` dict."""

    rows: pd.DataFrame
    settings: ZeroShotSettings
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def mean_acc(self, stage: str | None = None) -> float:
        """The papers' summary: mean of ``acc`` over the evaluated tasks."""
        rows = self.rows[(self.rows.task == MEAN_TASK) & (self.rows.metric == "acc")]
        if stage is not None:
            rows = rows[rows.stage == stage]
        return float(rows.value.iloc[0]) if len(rows) else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows.to_dict(orient="records"), "settings": asdict(self.settings),
                "seconds": self.seconds, "lm_eval": self.raw}


def harness_version() -> str:
    """The installed lm-eval version."""
    import lm_eval

    return str(getattr(lm_eval, "__version__", "unknown"))


@functools.lru_cache(maxsize=2)
def task_manager(include_defaults: bool = True) -> Any:
    """An lm-eval TaskManager that knows the local tasks (and lm-eval's own when
    ``include_defaults``; indexing those takes a few seconds, so it is cached)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(ensure_local_tasks()), include_defaults=include_defaults)


def known_task_names() -> set[str]:
    """Every task/group/tag name lm-eval knows plus the local tasks. Indexing lm-eval's ~15k
    task YAMLs takes seconds, so the names are cached per lm-eval version in the cache dir."""
    path = local_task_dir() / f"_lm_eval_names-{harness_version()}.json"
    if path.is_file():
        return set(json.loads(path.read_text())) | set(OFFLINE_TASKS)
    names = sorted(task_manager(include_defaults=True).all_tasks)
    write_text_atomic(path, json.dumps(names))
    return set(names) | set(OFFLINE_TASKS)


def resolve_tasks(tasks: tuple[str, ...] | list[str]) -> tuple[tuple[str, ...], Any]:
    """Validate task names against lm-eval's index; returns (names, TaskManager).

    Raises ConfigError for an unknown name, listing close matches (difflib)."""
    names = tuple(t.strip() for t in tasks if t.strip())
    if not names:
        raise ConfigError("evaluation.zeroshot_tasks: no task given; accepted: lm-eval task names, e.g. "
                          f"{', '.join(PAPER_TASKS)} or offline {', '.join(OFFLINE_TASKS)}")
    known = known_task_names() if not set(names) <= set(OFFLINE_TASKS) else set(OFFLINE_TASKS)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known | set(OFFLINE_TASKS)), n=5, cutoff=0.6)
            hint = f"close matches: {', '.join(close)}" if close else "no close match"
            raise ConfigError(f"evaluation.zeroshot_tasks: {name!r} is not an lm-eval task ({hint}); "
                              f"the papers' tasks: {', '.join(PAPER_TASKS)}; offline: {', '.join(OFFLINE_TASKS)}")
    return names, task_manager(include_defaults=not set(names) <= set(OFFLINE_TASKS))


def _load_tasks(names: tuple[str, ...], manager: Any) -> list[Any]:
    """Instantiate each task (this downloads its data); unreachable data -> CorpusUnavailableError."""
    loaded = []
    for i, name in enumerate(names):
        try:
            loaded.extend(manager.load([name])["tasks"].values())
        except (ConnectionError, OSError) as exc:  # the hub is unreachable: do not retry the others
            reason = f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
            rest = f"; not tried: {', '.join(names[i + 1:])}" if names[i + 1:] else ""
            raise CorpusUnavailableError(
                f"zero-shot task data not reachable for {name!r} ({reason}){rest}; the papers' tasks need the "
                f"Hugging Face Hub (or a populated HF datasets cache); offline, use --tasks {','.join(OFFLINE_TASKS)}"
            ) from exc
    return loaded


def _clean(value: Any) -> float | None:
    if value is None or isinstance(value, str):
        return None
    value = float(value)
    return None if math.isnan(value) else value


def tidy_results(results: dict[str, Any], stage: str, limit: int | float | None, version: str) -> pd.DataFrame:
    """lm-eval's ``results`` dict -> tidy rows (one per task x metric x filter), plus the
    ``mean`` rows: unweighted mean over tasks of each metric that every task reports
    (``acc`` is the papers' summary)."""
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key or key == "alias":
                continue
            metric, filt = key.split(",", 1)
            rows.append({
                "stage": stage, "task": task, "metric": metric, "filter": filt, "value": _clean(value),
                "stderr": _clean(metrics.get(f"{metric}_stderr,{filt}")),
                "task_version": str(results.get("versions", {}).get(task, "")),
                "num_fewshot": int(results.get("n-shot", {}).get(task, 0) or 0),
                "limit": limit, "harness_version": version,
            })
    frame = pd.DataFrame(rows, columns=COLUMNS)
    tasks = frame.task.unique()
    for (metric, filt), group in frame.groupby(["metric", "filter"], sort=True):
        if len(tasks) > 1 and group.task.nunique() == len(tasks) and group.value.notna().all():
            frame.loc[len(frame)] = {
                "stage": stage, "task": MEAN_TASK, "metric": metric, "filter": filt, "value": float(group.value.mean()),
                "stderr": None, "task_version": "", "num_fewshot": int(group.num_fewshot.max()), "limit": limit,
                "harness_version": version,
            }
    if len(tasks) == 1:  # the mean of one task is that task; keep the summary row for uniform queries
        for _, row in frame[frame.metric == "acc"].iterrows():
            frame.loc[len(frame)] = {**row.to_dict(), "task": MEAN_TASK, "stderr": None, "task_version": ""}
    return frame


def zeroshot_evaluate(
    model: nn.Module,
    tokenizer: Any,
    tasks: tuple[str, ...] | list[str] = PAPER_TASKS,
    stage: str = "dense",
    limit: int | float | None = None,
    num_fewshot: int = 0,
    batch_size: int = 1,
    seed: int = 0,
    bootstrap_iters: int = 100000,
) -> ZeroShotResult:
    """Evaluate an in-memory model on lm-eval tasks (zero-shot by default).

    ``limit``: first N documents per task (or a fraction < 1), lm-eval's semantics; stored on
    every row. Raises ConfigError for unknown task names (with close matches) and
    CorpusUnavailableError when a task's data cannot be downloaded."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    if limit is not None and limit <= 0:
        raise ConfigError(f"evaluation.zeroshot_limit: {limit} is invalid; accepted: a positive number or None")
    if num_fewshot < 0 or batch_size < 1:
        raise ConfigError(f"num_fewshot {num_fewshot} / batch_size {batch_size} invalid; accepted: >= 0 / >= 1")
    names, manager = resolve_tasks(tasks)
    task_objects = _load_tasks(names, manager)
    version = harness_version()
    settings = ZeroShotSettings(names, limit, num_fewshot, batch_size, bootstrap_iters, seed, version)
    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    t0 = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm, tasks=task_objects, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
        bootstrap_iters=bootstrap_iters, log_samples=False, random_seed=seed, numpy_random_seed=seed,
        torch_random_seed=seed, fewshot_random_seed=seed,
    )
    seconds = time.perf_counter() - t0
    if results is None:  # non-zero rank in a distributed launch
        raise RuntimeError("lm_eval.simple_evaluate returned no results (not rank 0)")
    frame = tidy_results(results, stage, limit, version)
    raw = {k: results.get(k) for k in ("results", "versions", "n-shot", "n-samples", "configs") if k in results}
    raw["config"] = {k: v for k, v in results.get("config", {}).items() if k != "model_args"}
    for _, row in frame[frame.metric == "acc"].iterrows():
        log.info("zero-shot %s %s acc %.4f", stage, row.task, row.value)
    log.info("zero-shot %s: %d task(s) in %.1f s", stage, len(names), seconds)
    return ZeroShotResult(frame, settings, _jsonable(raw), seconds)


def _jsonable(obj: Any) -> Any:
    """Recursively convert lm-eval output to JSON-compatible values (callables -> their repr)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    try:
        return float(obj)
    except (TypeError, ValueError):
        return repr(obj)
