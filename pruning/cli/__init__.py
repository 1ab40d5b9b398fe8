"""Command-line interface: `python -m pruning <command> ...`.

Every module in this package that defines ``register(subparsers)`` adds its commands; the
module is imported lazily only for the parser, and each command's handler receives the parsed
``argparse.Namespace`` and converts it into typed library objects (never passes it on).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import pkgutil
import sqlite3
import sys
from typing import NoReturn

from pruning.errors import PruningLabError

log = logging.getLogger(__name__)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line, ``error: ...``, and exit status 2 (the
    same form as every other input error of the CLI; ``--help`` still shows the usage)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("python -m pruning").strip()
        print(f"error: {command + ': ' if command else ''}{one_line(message)}", file=sys.stderr)
        raise SystemExit(2)


def one_line(text: str) -> str:
    """``text`` with its lines joined by `` | `` (an error is always printed as one line)."""
    return " | ".join(part.strip() for part in str(text).splitlines() if part.strip())


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per ``register`` found in ``pruning.cli.*`` modules."""
    parser = OneLineParser(prog="python -m pruning", description="Pruning Lab engine")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one CLI command; user errors print one clear line and exit with status 2. A closed
    stdout (``python -m pruning runs | head``) ends the command quietly with status 0."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage error (one line, status 2) or --help (status 0)
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except PruningLabError as exc:
        print(f"error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as exc:  # the machine refused (disk full, read-only, no such directory): one line, status 1
        log.debug("command failed", exc_info=True)
        print(f"error: {one_line(os_error_line(exc))}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # the job queue's database (read-only data directory, locked, damaged)
        log.debug("command failed", exc_info=True)
        print(f"error: {one_line(sqlite_error_line(exc))}", file=sys.stderr)
        return 1


def os_error_line(exc: OSError) -> str:
    """``exc`` in one sentence: what failed on which path, and what usually causes it."""
    where = f" {exc.filename!r}" if exc.filename is not None else ""
    also = f" -> {exc.filename2!r}" if getattr(exc, "filename2", None) is not None else ""
    hints = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
             errno.EACCES: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a directory",
             errno.EISDIR: "it is a directory, not a file", errno.EDQUOT: "the disk quota is exhausted"}
    hint = hints.get(exc.errno or -1)
    what = exc.strerror or exc.__class__.__name__
    return f"{what}:{where}{also}" + (f" ({hint})" if hint and hint.lower() != what.lower() else "")


def sqlite_error_line(exc: sqlite3.Error) -> str:
    from pruning.paths import data_dir

    queue = os.path.join(os.environ.get("PRUNING_LAB_DATA") or str(data_dir()), "jobs", "queue.sqlite")
    text = str(exc)
    hint = ("; is the data directory read-only? set PRUNING_LAB_DATA to a writable one"
            if "readonly" in text.replace(" ", "") or "unable to open" in text else "")
    return f"the job queue {queue!r} cannot be used: {text}{hint}"


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop quietly, as the Python docs recommend for SIGPIPE
    (https://docs.python.org/3/library/signal.html#note-on-sigpipe); stdout points at devnull so the
    interpreter's final flush does not raise again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        log.debug("stdout has no file descriptor to redirect")
    return 0
