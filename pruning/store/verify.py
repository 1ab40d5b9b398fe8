"""``verify`` and ``verify --repair``: find every store file that cannot be used, and set it aside.

:func:`verify_store` checks everything a reader could touch — the catalog manifest and parts, every
attempt directory under ``runs/`` (history included: ``attempts`` reads those) and every annotation —
decoding every Parquet page (deep), and counts the runs the views still show.

:func:`repair_store` moves each bad file (a bad bundle file: its whole attempt directory, so no run
is left half-present) to ``quarantine/<UTC timestamp>/<its path relative to the store>``, never
deleting anything, then rebuilds the catalog from the readable parts and bundle directories. A
missing or corrupt catalog manifest is rebuilt from the part files themselves
(:mod:`pruning.store.recover`): no part is set aside with it, so runs that only the catalog holds
(bulk loads) stay readable.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pruning.store.annotations import annotation_problems
from pruning.store.catalog import bundle_problems, catalog_state, impostor_problem, read_manifest
from pruning.store.checksums import bundle_checksum_problems, mismatch
from pruning.store.compaction import compact
from pruning.store.layout import published_attempts, store_root, writable_store
from pruning.store.lock import writer_lock
from pruning.store.health import Problem, check_parquet
from pruning.store.queries import list_runs
from pruning.store.recover import part_files, recover_manifest

log = logging.getLogger(__name__)

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_store` found: the bad files and how many runs the views show."""

    root: Path
    problems: tuple[Problem, ...]
    runs_readable: int

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        """``verify: 312 runs readable, 2 files quarantined (see above)``."""
        if self.ok:
            return f"verify: {self.runs_readable} runs readable, no problems in {self.root}"
        return (f"verify: {self.runs_readable} runs readable, {len(self.problems)} file(s) quarantined (see above); "
                "`python -m pruning verify --repair` moves them aside")


@dataclass(frozen=True)
class RepairReport:
    """What :func:`repair_store` did: ``moved`` (store-relative path, new location) and the result."""

    root: Path
    quarantine: Path | None
    moved: tuple[tuple[str, Path], ...]
    generation: int | None
    after: VerifyReport

    def summary(self) -> str:
        """One line: what moved where, the new catalog generation, the runs readable afterwards."""
        if not self.moved and self.generation is None:
            return f"verify --repair: nothing to repair; {self.after.runs_readable} runs readable"
        where = f"moved {len(self.moved)} path(s) to {self.quarantine}" if self.moved else "moved nothing"
        state = "clean" if self.after.ok else f"{len(self.after.problems)} problem(s) left"
        return (f"verify --repair: {where} (nothing deleted), rebuilt the catalog (generation {self.generation}); "
                f"{self.after.runs_readable} runs readable, store {state}")


def verify_store(root: Path | str | None = None, *, deep: bool = True) -> VerifyReport:
    """Check every catalog file, attempt directory and annotation of the store (``deep``: decode
    every page, not only the footer); never writes."""
    root = store_root(root)
    # count first: a query that meets a damaged page decodes the snapshot and quarantines the file, and
    # the checks below then see that verdict (`verify --quick` said "no problems" after it, exit 0)
    runs_readable = len(list_runs(root=root))
    manifest, _, problems = catalog_state(root, deep=deep)
    attempts = sorted(published_attempts(root))
    known = {bundle for bundle, _, _ in attempts} | set(manifest.bundles)
    for name, recorded in manifest.checksums.items():
        live = any(name in names for names in manifest.parts.values())
        reason = mismatch(root / "catalog" / "parts" / name, recorded, quick=not deep) if live else None
        if reason is not None:
            problems.append(Problem(path=root / "catalog" / "parts" / name, kind="part", reason=reason))
    for _, _, dirname in attempts:
        bad = bundle_problems(root, dirname, deep=deep) or bundle_checksum_problems(root, dirname, quick=not deep)
        impostor = None if bad else impostor_problem(root, dirname, known)
        problems += bad + ([impostor] if impostor is not None else [])
    problems += annotation_problems(root)
    seen: dict[str, Problem] = {}
    for problem in problems:
        seen.setdefault(str(problem.path), problem)
    return VerifyReport(root=root, problems=tuple(seen.values()), runs_readable=runs_readable)


def _quarantine_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path, n = root / QUARANTINE_DIR / stamp, 1
    while path.exists():
        n += 1
        path = root / QUARANTINE_DIR / f"{stamp}-{n}"
    return path


def _targets(root: Path, problems: tuple[Problem, ...]) -> list[Path]:
    """The paths to move for these problems (attempt directories for bundle files)."""
    out: list[Path] = []
    for problem in problems:
        if problem.kind == "bundle" and problem.bundle:
            path = root / "runs" / problem.bundle
        elif problem.kind == "manifest":  # the manifest alone: its parts are recovered, never set aside with it
            path = problem.path
        else:
            path = problem.path
        out.append(path)
    return [p for p in dict.fromkeys(out) if os.path.lexists(p)]


def repair_store(root: Path | str | None = None) -> RepairReport:
    """Move every file :func:`verify_store` reports into ``quarantine/<timestamp>/`` (relative
    paths kept) and rebuild the catalog from what is readable. Raises StoreReadOnlyError on a
    read-only store. Runs that were readable before stay readable."""
    root = writable_store(root, "repair the store")
    before = verify_store(root)
    if before.ok:
        return RepairReport(root, None, (), None, before)
    moved: list[tuple[str, Path]] = []
    qdir = _quarantine_dir(root)
    with writer_lock(root):
        report = verify_store(root)  # again under the lock: nothing changes while files move
        for path in _targets(root, report.problems):
            rel = path.relative_to(root)
            dest = qdir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, dest)
            moved.append((rel.as_posix(), dest))
            log.info("moved %s to %s", rel.as_posix(), dest)
        if any(p.kind == "manifest" for p in report.problems):
            for table, _gen, part in part_files(root):  # unreadable parts aside, the readable ones recovered
                if check_parquet(part, table, deep=True) is not None:
                    rel = part.relative_to(root)
                    (qdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    os.rename(part, qdir / rel)
                    moved.append((rel.as_posix(), qdir / rel))
            recover_manifest(root)
    compact(root, rebuild=True)
    generation = read_manifest(root)[0].generation
    after = verify_store(root)
    if not after.ok:
        log.warning("after repair: %s", "; ".join(p.line(root) for p in after.problems))
    return RepairReport(root, qdir if moved else None, tuple(moved), generation, after)

