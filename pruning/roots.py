"""Local paths typed by users — model directories, ``.gguf`` files, ``text:PATH`` corpora — and
the allowed roots they must lie under when they come from the app's forms.

One resolution for everyone: the app checks a path and the worker (started with the repository
root as its working directory) opens it, so :func:`resolve_local_path` reads a relative path
against the repository root, never against the caller's working directory. The app's forms accept
a path only when it resolves (symlinks and ``..`` followed) under one of :func:`allowed_roots`:
the offline cache, the repository, and the directories of ``PRUNING_LAB_MODEL_ROOTS``
(docs/security.md). The command line takes any path; the rule guards the shared server.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from pruning.errors import ConfigError
from pruning.paths import REPO_ROOT, cache_dir

ROOTS_ENV = "PRUNING_LAB_MODEL_ROOTS"
TEXT_PREFIX = "text:"


def local_path(text: str) -> Path:
    """The absolute path ``text`` names: ``~`` expanded, a relative path taken from the repository
    root (where the worker runs), never from the caller's working directory. Symlinks are kept
    (a ``model.gguf`` link keeps its suffix)."""
    path = Path(text.strip()).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def resolve_local_path(text: str) -> Path:
    """:func:`local_path` with symlinks and ``..`` resolved: the file that will be opened."""
    return local_path(text).resolve()


def allowed_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Directories under which a path from a form may lie: the offline cache
    (``pruning.paths.cache_dir()``), the repository, and the ``os.pathsep``-separated directories
    of ``PRUNING_LAB_MODEL_ROOTS`` — each resolved, without repeats."""
    env = os.environ if environ is None else environ
    roots = [cache_dir(), REPO_ROOT]
    roots += [Path(p).expanduser() for p in env.get(ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    out: list[Path] = []
    for root in roots:
        resolved = root.resolve()
        if resolved not in out:
            out.append(resolved)
    return out


def check_under_roots(
    field: str, text: str, roots: Iterable[Path] | None = None, what: str = "path", shown: str | None = None,
    roots_name: str = "roots",
) -> Path:
    """The resolved path of ``text`` when it lies under one of ``roots`` (default
    :func:`allowed_roots`), else ConfigError naming ``field``, the value as typed (``shown``,
    default ``text``) and the accepted roots."""
    roots = list(allowed_roots() if roots is None else roots)
    target = resolve_local_path(text)
    if any(target == r or target.is_relative_to(r) for r in (Path(x).resolve() for x in roots)):
        return target
    raise ConfigError(
        f"{field}: {shown or text!r} is outside the allowed {roots_name}; accepted: a {what} under "
        f"{', '.join(str(r) for r in roots)} (add directories with {ROOTS_ENV})"
    )


def check_dataset_root(field: str, name: str, roots: Iterable[Path] | None = None) -> None:
    """For a ``text:PATH`` corpus name, the allowed-roots rule on PATH (ConfigError naming
    ``field``); named corpora (``wiki``, ``c4`` …) pass."""
    if name.startswith(TEXT_PREFIX):
        check_under_roots(field, name[len(TEXT_PREFIX):], roots, what="text file", shown=name)
