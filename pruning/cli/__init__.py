"""Command-line interface: `python -m pruning <command> ...`.

Every module in this package that defines ``register(subparsers)`` adds its commands; the
module is imported lazily only for the parser, and each command's handler receives the parsed
``argparse.Namespace`` and converts it into typed library objects (never passes it on).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from pruning.errors import PruningLabError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Parser with one subcommand per ``register`` found in ``pruning.cli.*`` modules."""
    parser = argparse.ArgumentParser(prog="python -m pruning", description="Pruning Lab engine")
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
    """Run one CLI command; user errors print one clear line and exit with status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.handler(args) or 0)
    except PruningLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
