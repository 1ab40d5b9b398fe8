"""Offline lm-eval tasks shipped with Pruning Lab (no Hugging Face Hub needed).

Each local task is generated deterministically at first use into
``<cache>/lm_eval_tasks/<task>/`` as an lm-eval task YAML plus its JSONL data file, and is
registered through ``lm_eval.tasks.TaskManager(include_path=local_task_dir())``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pruning.evaluation.tasks.wiki_cloze import TASK_NAME as WIKI_CLOZE
from pruning.evaluation.tasks.wiki_cloze import ensure_wiki_cloze
from pruning.paths import cache_dir

#: local task name -> builder(root_dir) -> path of its YAML file
LOCAL_TASKS: dict[str, Callable[..., Path]] = {WIKI_CLOZE: ensure_wiki_cloze}


def local_task_dir() -> Path:
    """Root of the generated local task YAMLs (the TaskManager ``include_path``)."""
    path = cache_dir() / "lm_eval_tasks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ensure_local_tasks(names: tuple[str, ...] | list[str] | None = None) -> Path:
    """Generate (once) the local tasks among ``names`` (all when None); returns the include path."""
    root = local_task_dir()
    for name, build in LOCAL_TASKS.items():
        if names is None or name in names:
            build(root)
    return root


__all__ = ["LOCAL_TASKS", "WIKI_CLOZE", "ensure_local_tasks", "local_task_dir"]
