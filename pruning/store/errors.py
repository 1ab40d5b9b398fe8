"""Errors of the results store and the importers (all :class:`PruningLabError` subclasses, so the
CLI prints them as one line; every message names the bad value)."""

from __future__ import annotations

from pruning.errors import PruningLabError


class StoreError(PruningLabError, RuntimeError):
    """A results-store operation that cannot be done (bad table, bad filter, broken artifact)."""


class RunNotFoundError(StoreError, KeyError):
    """A run id that the store does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "run not found"


class QueryRejectedError(StoreError, ValueError):
    """A query that is not read-only (only SELECT/WITH/DESCRIBE/SHOW/SUMMARIZE are accepted)."""


class ImportFormatError(PruningLabError, ValueError):
    """An input file of an importer that cannot be read; names the file, line and bad value."""


class StoreReadOnlyError(StoreError, PermissionError):
    """A write (publish, compact, annotate, import, repair) to a store that is read-only here."""
