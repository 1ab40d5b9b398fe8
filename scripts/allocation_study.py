"""The allocation study of issue 16: validation sweep, knob choice, final sweep and the study table.

    .venv/bin/python scripts/allocation_study.py validation --model smollm2-135m
    .venv/bin/python scripts/allocation_study.py choose --model smollm2-135m [--store data/store]
    .venv/bin/python scripts/allocation_study.py final --model smollm2-135m
    .venv/bin/python scripts/allocation_study.py table [--store data/store]
    .venv/bin/python scripts/allocation_study.py proxy [--store data/store]
    .venv/bin/python scripts/allocation_study.py sensitivity --model smollm2-135m [--sparsity 0.8]

The command line of :mod:`pruning.study`, which holds the protocol (families, knob grids, the
validation split, the final seeds), the choice on validation, the verdict rule (a win of "ours" only
where its mean beats every other family's by more than the seed spread) and the tables.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from pruning.study import (  # noqa: E402
    CHOICES_DIR, PROXY_TAGS, STUDY_TAG, choices_markdown, choose, proxy_report, study_report, write_final,
    write_validation,
)
from pruning.study.sensitivity import PROBE_SPARSITY, write_sensitivity  # noqa: E402
from pruning.study.sweeps import _rel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validation", help="write the validation sweep")
    v.add_argument("--model", required=True)
    v.add_argument("--layers", type=int, help="number of blocks, when the model's config.json is not here")
    v.add_argument("--out", type=Path)
    c = sub.add_parser("choose", help="choose every family's knobs on the validation runs in the store")
    c.add_argument("--model", required=True)
    c.add_argument("--layers", type=int)
    c.add_argument("--store", help="store root (default: the data directory's store, data/store)")
    c.add_argument("--out", type=Path)
    c.add_argument("--allow-missing", action="store_true", help="choose among the candidates that are there")
    c.add_argument("--all", action="store_true", help="also print every candidate")
    f = sub.add_parser("final", help="write the final sweep from the choices")
    f.add_argument("--model", required=True)
    f.add_argument("--choices", type=Path)
    f.add_argument("--out", type=Path)
    t = sub.add_parser("table", help="print the study table, the verdicts and the GPU time from the store")
    t.add_argument("--store")
    t.add_argument("--no-per-run", action="store_true", help="GPU time summary only")
    t.add_argument("--choices-dir", type=Path, help="folder of the choices-MODEL.json files (default docs/study)")
    s = sub.add_parser("sensitivity", help="write the per-block sensitivity sweep (one block pruned at a time)")
    s.add_argument("--model", required=True)
    s.add_argument("--layers", type=int, help="number of blocks, when the model's config.json is not here")
    s.add_argument("--sparsity", type=float, default=PROBE_SPARSITY, help="the probed block's sparsity")
    s.add_argument("--out", type=Path)
    x = sub.add_parser("proxy", help="print the CPU proxy runs (small budget, wiki:validation) from the store")
    x.add_argument("--store")
    q = sub.add_parser("precision", help="bfloat16 runs (tag precision-check) against their float32 twins' seed spread")
    q.add_argument("--store")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "validation":
            out = args.out or REPO / "sweeps" / f"study-validation-{args.model}.yaml"
            configs = write_validation(args.model, out, args.layers)
            print(f"wrote {_rel(out)}: {len(configs)} runs")
        elif args.command == "choose":
            cells = choose(args.model, args.store, args.out, args.layers, args.allow_missing)
            print(choices_markdown(cells))
            if args.all:
                print()
                print(choices_markdown(cells, every=True))
        elif args.command == "final":
            choices = args.choices or CHOICES_DIR / f"choices-{args.model}.json"
            out = args.out or REPO / "sweeps" / f"study-final-{args.model}.yaml"
            configs = write_final(args.model, choices, out)
            print(f"wrote {_rel(out)}: {len(configs)} runs")
        elif args.command == "sensitivity":
            out = args.out or REPO / "sweeps" / f"study-sensitivity-{args.model}.yaml"
            configs = write_sensitivity(args.model, out, args.layers, args.sparsity)
            print(f"wrote {_rel(out)}: {len(configs)} runs")
        elif args.command == "precision":
            from pruning.study.precision import precision_report

            print(precision_report(args.store))
        elif args.command == "proxy":
            print(proxy_report(args.store) or f"no run tagged {' or '.join(PROXY_TAGS)} in the store")
        else:
            report = study_report(args.store, per_run=not args.no_per_run, choices_dir=args.choices_dir)
            print(report or f"no run tagged {STUDY_TAG!r} in the store")
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
