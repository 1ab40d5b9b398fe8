"""Review annotations: free-text notes and tags per run id.

Annotations are small mutable JSON files under ``store/annotations/`` (one per run id), written
atomically under the writer lock; they never touch the immutable run artifacts.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.atomic import write_json_atomic
from pruning.store.errors import StoreError
from pruning.store.health import Problem, read_annotation_file, warn_once
from pruning.store.layout import check_bundle_id, store_root, writable_store
from pruning.store.lock import writer_lock
from pruning.store.sql import query_df

log = logging.getLogger(__name__)


def _path(root: Path, run_id: str) -> Path:
    return root / "annotations" / f"{check_bundle_id(run_id)}.json"


def read_annotation(run_id: str, root: Path | str | None = None, *, strict: bool = False) -> dict[str, Any]:
    """``{"run_id", "tags": [...], "notes": [{"text", "created_at"}]}`` (empty if none).

    A malformed file reads as empty with a warning naming it (``strict``: raises StoreError, so
    a writer never replaces a file it could not read)."""
    root = store_root(root)
    path = _path(root, run_id)
    empty = {"run_id": run_id, "tags": [], "notes": []}
    if not path.exists():
        return empty
    data, reason = read_annotation_file(path)
    if data is not None and data["run_id"] != run_id:
        data, reason = None, f"names run {data['run_id']!r}, not {run_id!r} (its file name)"
    if reason is None:
        return data
    if strict:
        raise StoreError(f"annotation file {path} {reason}; move it aside with `python -m pruning verify --repair`")
    warn_once(Problem(path=path, kind="annotation", reason=reason), root)
    return empty


def _run_exists(run_id: str, root: Path) -> bool:
    """Whether the store's views hold ``run_id`` (asked of the engine directly: the run queries read
    annotations, so this module must not import them)."""
    return not query_df("SELECT 1 FROM runs WHERE run_id = ? LIMIT 1", [run_id], root).empty


def _update(run_id: str, root: Path | str | None, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    root = store_root(root)
    if not _run_exists(run_id, root):
        raise StoreError(f"cannot annotate unknown run {run_id!r}; see `python -m pruning runs`")
    root = writable_store(root, f"annotate {run_id}")
    with writer_lock(root):
        data = read_annotation(run_id, root, strict=True)
        change(data)
        write_json_atomic(_path(root, run_id), data)
    return data


def add_note(run_id: str, text: str, root: Path | str | None = None) -> dict[str, Any]:
    """Append a review note (timestamped, UTC) to ``run_id``; returns the annotation."""
    if not text.strip():
        raise StoreError("a note needs non-empty text")
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return _update(run_id, root, lambda d: d["notes"].append({"text": text.strip(), "created_at": stamp}))


def set_tags(run_id: str, tags: list[str], *, remove: bool = False, root: Path | str | None = None) -> dict[str, Any]:
    """Add (or with ``remove`` drop) tags of ``run_id``; tags are kept sorted and unique."""
    clean = [t.strip() for t in tags if t.strip()]
    if not clean:
        raise StoreError(f"no tags given for run {run_id!r}")
    bad = [t for t in clean if any(ch in t for ch in ",\n")]
    if bad:
        raise StoreError(f"tags may not contain ',' or newlines: {bad}")

    def change(d: dict[str, Any]) -> None:
        current = set(d["tags"])
        if remove:
            missing = [t for t in clean if t not in current]
            if missing:
                log.warning("run %s has no tag(s) %s", run_id, missing)
            current -= set(clean)
        else:
            current |= set(clean)
        d["tags"] = sorted(current)

    return _update(run_id, root, change)


def annotation_problems(root: Path | str | None = None) -> list[Problem]:
    """Annotation files that cannot be read (bad JSON, no ``run_id``, malformed tags or notes)."""
    return _scan(store_root(root))[1]


def _scan(root: Path) -> tuple[list[dict[str, Any]], list[Problem]]:
    rows, problems = [], []
    for path in sorted((root / "annotations").glob("*.json")):
        data, reason = read_annotation_file(path)
        if data is not None and data["run_id"] != path.stem:
            data, reason = None, f"names run {data['run_id']!r}, not {path.stem!r} (its file name)"
        if data is None:
            if reason != "file is missing":  # removed while listing
                problems.append(Problem(path=path, kind="annotation", reason=reason))
            continue
        rows.append({"run_id": data["run_id"], "tags": list(data["tags"]), "notes": [n["text"] for n in data["notes"]]})
    return rows, problems


def all_annotations(root: Path | str | None = None) -> pd.DataFrame:
    """One row per annotated run: run_id, tags (list), notes (list of texts). A malformed file is
    skipped with a warning naming it (``python -m pruning verify`` lists it)."""
    root = store_root(root)
    rows, problems = _scan(root)
    for problem in problems:
        warn_once(problem, root)
    return pd.DataFrame(rows, columns=["run_id", "tags", "notes"])
