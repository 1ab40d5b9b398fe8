"""Importer for the team's research notes (``seed/research-notes.txt`` and files in its format).

Every perplexity becomes one *reference result set* (kind ``reference``) with its model, method,
layer-group variant (the column header, mapped to a canonical preset where possible; the raw
header is kept), epsilon where written ("0.2 ww"), sparsity 0.7 recorded as *assumed*, and GT
cells marked as the baseline. ``nan`` stays NaN. Each cell keeps its raw text and source line.
The zero-shot block becomes per-task scores, the "(Avg)" lines attention statistics. See
DESIGN.md "Reading the notes" for the reading of every block.

The whole file is parsed before anything is written; any line that cannot be read raises
:class:`ImportFormatError` with its line number and the store is left unchanged.

Parsing: :mod:`.notes_parser` (records in :mod:`.notes_records`); tables: :mod:`.notes_tables`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

from pruning.importers.notes_parser import NotesParser
from pruning.importers.notes_tables import build_tables, tables_fingerprint
from pruning.paths import REPO_ROOT
from pruning.store.errors import ImportFormatError
from pruning.store.publish import PublishResult, publish_bundle

log = logging.getLogger(__name__)

IMPORTER_VERSION = 1


def _bundle_id(path: Path) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", path.stem).strip("-").lower() or "notes"
    return f"ref-notes-{slug}"


def source_name(path: Path) -> str:
    """How a source file is recorded: relative to the repository root when possible."""
    try:
        return os.path.relpath(path.resolve(), REPO_ROOT)
    except ValueError:
        return str(path)


def parse_notes(path: str | Path) -> NotesParser:
    """Parse a notes file (raises ImportFormatError with the line number on a malformed line)."""
    path = Path(path)
    if not path.is_file():
        raise ImportFormatError(f"notes file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(f"notes file {str(path)!r} is not UTF-8 text: {exc}") from None
    parser = NotesParser(text, source_name(path)).parse()
    if not parser.cells and not parser.zeroshot and not parser.attention:
        raise ImportFormatError(f"notes file {str(path)!r} holds no results")
    return parser


def import_notes(path: str | Path, root: Path | str | None = None) -> PublishResult:
    """Parse a notes file completely, then publish it as one reference bundle (all or nothing).

    Re-importing an unchanged file is a no-op; a changed file supersedes the earlier import."""
    path = Path(path)
    parser = parse_notes(path)
    bundle = _bundle_id(path)
    tables = build_tables(parser, parser.source, bundle)
    # hash what would be stored, not only the input: a change in how cells are read (e.g. a new
    # preset that a header now maps to) must re-publish, not be skipped as "unchanged"
    digest = hashlib.sha256(path.read_bytes() + f"importer-v{IMPORTER_VERSION}".encode()
                            + tables_fingerprint(tables).encode()).hexdigest()
    info = {"kind": "reference", "importer": "notes", "source_file": parser.source, "cells": len(parser.cells)}
    result = publish_bundle(bundle, tables, info=info, root=root, content_hash=digest, if_exists="skip_same")
    log.info("imported %s: %d perplexity cells, %d zero-shot block(s), %d attention averages%s", parser.source,
             len(parser.cells), len(parser.zeroshot), len(parser.attention), " (unchanged, skipped)" if result.skipped else "")
    return result
