"""Review annotations: free-text notes and tags per run id.

Annotations are small mutable JSON files under ``store/annotations/`` (one per run id), written
atomically under the writer lock; they never touch the immutable run artifacts.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd

from pruning.store.catalog import check_bundle_id, store_root, write_json_atomic, writer_lock
from pruning.store.errors import StoreError

log = logging.getLogger(__name__)


def _path(root: Path, run_id: str) -> Path:
    return root / "annotations" / f"{check_bundle_id(run_id)}.json"


def read_annotation(run_id: str, root: Path | str | None = None) -> dict[str, Any]:
    """``{"run_id", "tags": [...], "notes": [{"text", "created_at"}]}`` (empty if none)."""
    path = _path(store_root(root), run_id)
    if not path.exists():
        return {"run_id": run_id, "tags": [], "notes": []}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise StoreError(f"annotation file {path} is not valid JSON: {exc}") from exc


def _update(run_id: str, root: Path | str | None, change) -> dict[str, Any]:
    from pruning.store.queries import run_exists

    root = store_root(root)
    if not run_exists(run_id, root=root):
        raise StoreError(f"cannot annotate unknown run {run_id!r}; see `python -m pruning runs`")
    with writer_lock(root):
        data = read_annotation(run_id, root)
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


def all_annotations(root: Path | str | None = None) -> pd.DataFrame:
    """One row per annotated run: run_id, tags (list), notes (list of texts)."""
    root = store_root(root)
    rows = []
    for path in sorted((root / "annotations").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue
        except ValueError as exc:
            raise StoreError(f"annotation file {path} is not valid JSON: {exc}") from exc
        rows.append({"run_id": data["run_id"], "tags": list(data.get("tags", [])),
                     "notes": [n["text"] for n in data.get("notes", [])]})
    return pd.DataFrame(rows, columns=["run_id", "tags", "notes"])
