"""``verify``: report store files that cannot be read; ``verify --repair`` moves them aside.

    python -m pruning verify            # every bad file with its path and reason; exit 1 if any
    python -m pruning verify --repair   # move them to data/store/quarantine/<time>/, rebuild the catalog

``verify`` (not ``--repair``) also names every model whose runs were made with different tokenizers
(``env.tokenizer_fingerprint``; :func:`pruning.store.queries.mixed_tokenizers`) and then exits 1: such runs
cut the same text into other windows and their perplexities are not comparable.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every file of the results store; --repair moves unreadable ones aside")
    p.add_argument("--repair", action="store_true",
                   help="move unreadable files to store/quarantine/<time>/ (never deleted) and rebuild the catalog")
    p.add_argument("--quick", action="store_true", help="read only file footers (schema), not every page")
    p.set_defaults(handler=cmd_verify)


def cmd_verify(args: argparse.Namespace) -> int:
    # the report below names every bad file; the readers' own quarantine warnings would repeat it. The
    # level is restored afterwards: a caller in the same process (the tests, an embedding) keeps its warnings
    health = logging.getLogger("pruning.store.health")
    level = health.level
    health.setLevel(logging.ERROR)
    try:
        return _verify(args)
    finally:
        health.setLevel(level)


def _verify(args: argparse.Namespace) -> int:
    from pruning.store.verify import repair_store, verify_store

    if args.repair:
        result = repair_store()
        for rel, dest in result.moved:
            print(f"moved: {rel} -> {dest}")
        for problem in result.after.problems:
            print(f"still bad: {problem.line(result.root)}")
        print(result.summary())
        return 0 if result.after.ok else 1
    report = verify_store(deep=not args.quick)
    for problem in report.problems:
        print(f"quarantined: {problem.line(report.root)}")
    mixed = mixed_tokenizer_lines(report.root)
    for line in mixed:
        print(line)
    print(report.summary())
    if mixed:
        print(f"verify: {len(mixed)} model(s) with runs of different tokenizers (see above): compare only runs of one "
              "tokenizer; a GPU batch installs the packed tokenizer (docs/gpu.md)")
    return 0 if report.ok and not mixed else 1


def mixed_tokenizer_lines(root: Path) -> list[str]:
    """One line per model whose runs were made with more than one tokenizer: each fingerprint with its
    number of runs and one run id."""
    from pruning.store.queries import mixed_tokenizers

    mixed = mixed_tokenizers(root=root)
    lines = []
    for model, rows in mixed.groupby("model", sort=True):
        each = ", ".join(f"{fp} ({n} run{'s' if n != 1 else ''}, e.g. {run})" for fp, n, run
                         in zip(rows["tokenizer_fingerprint"], rows["runs"], rows["example_run_id"]))
        lines.append(f"mixed tokenizers: model {model}: {len(rows)} tokenizer fingerprints: {each}")
    return lines
