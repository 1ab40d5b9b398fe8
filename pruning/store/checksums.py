"""Content checksums of store files (issue 27, item 5): corruption that still decodes is found.

A Parquet file whose bytes flipped inside a value keeps a valid footer and decodable pages (200 flipped
bytes in a catalog part turned ``max(value)`` from 192 into 5.8e299 and ``verify`` saw nothing). So every
file the store writes records its SHA-256 and size where it is listed: a bundle's ``manifest.json``
(``files``, written at publish and by ``repack``) and the catalog manifest (``checksums``, written at
compaction, bulk append and recovery). ``verify`` recomputes them (``--quick``: the sizes only); a
mismatch is a problem like any unreadable file: reported, left out of the views, set aside by
``verify --repair``. Files written before checksums existed have none and are checked as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pruning.atomic import write_json_atomic
from pruning.store.health import Problem

CHUNK = 1 << 20


def file_digest(path: Path) -> dict[str, object]:
    """``{"sha256": hex, "size": bytes}`` of a file."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    return {"sha256": h.hexdigest(), "size": size}


def mismatch(path: Path, recorded: dict | None, *, quick: bool = False) -> str | None:
    """Why ``path`` differs from its recorded digest (None when it matches or none is recorded)."""
    if not isinstance(recorded, dict):
        return None
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "file is missing"
    if recorded.get("size") is not None and size != recorded["size"]:
        return f"size {size} differs from the {recorded['size']} bytes recorded when it was written"
    if quick or not recorded.get("sha256"):
        return None
    actual = file_digest(path)["sha256"]
    if actual != recorded["sha256"]:
        return (f"content differs from its checksum (sha256 {actual[:12]}..., recorded {str(recorded['sha256'])[:12]}...):"
                " the file decodes but its bytes changed after it was written")
    return None


def bundle_checksum_problems(root: Path, dirname: str, *, quick: bool = False) -> list[Problem]:
    """The files of an attempt directory whose content differs from its manifest's ``files`` digests."""
    bdir = root / "runs" / dirname
    try:
        manifest = json.loads((bdir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []  # no manifest or an unreadable one: the bundle's tables are checked as before
    files = manifest.get("files") if isinstance(manifest, dict) else None
    out = []
    for name, recorded in (files or {}).items():
        reason = mismatch(bdir / name, recorded, quick=quick)
        if reason is not None:
            out.append(Problem(path=bdir / name, kind="bundle", reason=reason, bundle=dirname))
    return out


def record_bundle_file(bundle_dir: Path, name: str) -> None:
    """Update a bundle manifest's digest of one rewritten file (``repack``); no-op without digests."""
    path = bundle_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return
    manifest["files"][name] = file_digest(bundle_dir / name)
    write_json_atomic(path, manifest)
