"""`python -m pruning fetch [NAME ...]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fetch", help="prepare offline defaults (model safetensors copy, corpora)")
    p.add_argument("names", nargs="*", help="smollm2-135m, gemma3-270m, corpora (default: smollm2-135m corpora)")
    p.add_argument("--force", action="store_true", help="redo even if prepared")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pruning.model.fetch import DEFAULT_FETCH, fetch

    for name, path in fetch(tuple(args.names) or DEFAULT_FETCH, force=args.force).items():
        print(f"{name}: {path}")
    return 0
