"""Command-line interface: `python -m pruning <command> ...`.

Every module in this package that defines ``register(subparsers)`` adds its commands; the
module is imported lazily only for the parser, and each command's handler receives the parsed
``argparse.Namespace`` and converts it into typed library objects (never passes it on).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
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
        # the reader went away (`| head`): stop quietly, as the Python docs recommend for SIGPIPE
        # (https://docs.python.org/3/library/signal.html#note-on-sigpipe); point stdout at devnull
        # so the interpreter's final flush does not raise again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            log.debug("stdout has no file descriptor to redirect")
        return 0
