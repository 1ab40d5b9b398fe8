"""Results-store commands: ``runs``, ``attempts``, ``query``, ``export``, ``notes``, ``tag``, ``import``, ``compact``, ``repack``.

    python -m pruning runs [--model M] [--method W] [--status S] [--tag T] [--kind K] [--format table|csv|json]
    python -m pruning attempts RUN_ID [--format table|csv|json]
    python -m pruning query "SELECT ..." [--format table|csv|json]
    python -m pruning export --format csv|parquet --out DIR
    python -m pruning notes RUN_ID "text"
    python -m pruning tag RUN_ID tag1 [tag2 ...] [--remove]
    python -m pruning import notes FILE
    python -m pruning import lm-eval FILE.json (--run RUN_ID | --model NAME --label L)
    python -m pruning compact [--full]
    python -m pruning repack [--dry-run] [--drop-old-parts] [--rebuild-catalog]

(``verify`` and ``verify --repair`` live in :mod:`pruning.cli.verify`.)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from pruning.store.errors import StoreError

FORMATS = ("table", "csv", "json")
RUN_LIST_COLUMNS = ["run_id", "kind", "model", "method", "preset", "epsilon", "sparsity", "status", "ppl",
                    "zeroshot_mean", "tags", "label"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list runs and reference result sets in the results store")
    for name, plural in (("model", "models"), ("method", "methods"), ("status", "statuses"), ("tag", "tags"),
                         ("kind", "kinds"), ("preset", "presets")):
        p.add_argument(f"--{name}", action="append", help=f"only these {plural} (repeatable)")
    p.add_argument("--all-columns", action="store_true", help="show every column of list_runs()")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(handler=cmd_runs)

    p = sub.add_parser("attempts", help="every published attempt of a run (a re-run keeps the earlier ones as history)")
    p.add_argument("run_id")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(handler=cmd_attempts)

    p = sub.add_parser("query", help="read-only SQL over the store (views: runs, spectra, allocation, perplexity, "
                                     "zeroshot, attention, metrics)")
    p.add_argument("sql")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.set_defaults(handler=cmd_query)

    p = sub.add_parser("export", help="export every store table to CSV or Parquet files")
    p.add_argument("--format", choices=("csv", "parquet"), required=True)
    p.add_argument("--out", required=True, type=Path, help="output directory (created)")
    p.set_defaults(handler=cmd_export)

    p = sub.add_parser("notes", help="add a review note to a run")
    p.add_argument("run_id")
    p.add_argument("text")
    p.set_defaults(handler=cmd_notes)

    p = sub.add_parser("tag", help="add (or --remove) tags of a run")
    p.add_argument("run_id")
    p.add_argument("tags", nargs="+")
    p.add_argument("--remove", action="store_true")
    p.set_defaults(handler=cmd_tag)

    p = sub.add_parser("import", help="import reference results (research notes, lm-eval JSON)")
    isub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    n = isub.add_parser("notes", help="a research-notes text file")
    n.add_argument("file", type=Path)
    n.set_defaults(handler=cmd_import_notes)
    e = isub.add_parser("lm-eval", help="an lm-evaluation-harness results JSON (0.3 or 0.4 layout)")
    e.add_argument("file", type=Path)
    who = e.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", dest="run_id", help="attach the scores to this run")
    who.add_argument("--model", help="a reference result set of this model")
    e.add_argument("--label", help="label of the reference result set (default: file name)")
    e.add_argument("--stage", default="pruned", choices=("pruned", "dense"))
    e.set_defaults(handler=cmd_import_lm_eval)

    p = sub.add_parser("compact", help="fold published runs into the compacted catalog (faster queries)")
    p.add_argument("--full", action="store_true", help="rewrite everything into one part per table")
    p.set_defaults(handler=cmd_compact)

    p = sub.add_parser("repack", help="rewrite every published bundle with the store's compact encoding (same "
                                      "content; old allocation tables lose the spectral columns copied from their "
                                      "spectra table) and rebuild the catalog")
    p.add_argument("--dry-run", action="store_true", help="measure and report, write nothing")
    p.add_argument("--drop-old-parts", action="store_true",
                   help="delete the old catalog parts at once instead of after the readers' grace period (only "
                        "while no app or worker reads this store)")
    p.add_argument("--rebuild-catalog", action="store_true",
                   help="rebuild the catalog from the bundle directories even if no file changed (after a bundle "
                        "directory was taken out by hand)")
    p.set_defaults(handler=cmd_repack)


def _emit(df: pd.DataFrame, fmt: str) -> None:
    if fmt == "csv":
        df.to_csv(sys.stdout, index=False)
    elif fmt == "json":
        print(df.to_json(orient="records", default_handler=str))
    elif df.empty:
        print("(no rows)")
    else:
        with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                               "display.max_colwidth", 60):
            print(df.to_string(index=False))


def cmd_runs(args: argparse.Namespace) -> int:
    from pruning.store.queries import list_runs

    filters = {k: getattr(args, k) for k in ("model", "method", "status", "tag", "kind", "preset") if getattr(args, k)}
    df = list_runs(**filters)
    if not args.all_columns:
        df = df[RUN_LIST_COLUMNS]
    _emit(df, args.format)
    return 0


def cmd_attempts(args: argparse.Namespace) -> int:
    from pruning.store.queries import run_attempts

    _emit(run_attempts(args.run_id), args.format)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from pruning.store.queries import run_sql

    _emit(run_sql(args.sql), args.format)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import duckdb

    from pruning.store.annotations import all_annotations
    from pruning.store.catalog import snapshot
    from pruning.store.layout import ALL_TABLES
    from pruning.store.views import connect

    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create export directory {out}: {exc.strerror or exc}") from None
    snap = snapshot()
    con = connect(snap)
    try:
        for table in ALL_TABLES:
            target = str(out / f"{table}.{args.format}")  # passed as a value, never spliced into SQL
            rel = con.sql(f"SELECT * FROM {table} ORDER BY run_id")
            try:
                if args.format == "parquet":
                    rel.write_parquet(target, compression="zstd")
                else:
                    rel.write_csv(target, header=True)
            except duckdb.IOException as exc:
                raise StoreError(f"cannot write {target}: {' '.join(str(exc).split())[:300]}") from None
        ann = all_annotations()
        ann = ann.assign(tags=ann["tags"].map(",".join), notes=ann["notes"].map(json.dumps))
        try:
            if args.format == "parquet":
                ann.to_parquet(out / "annotations.parquet", index=False)
            else:
                ann.to_csv(out / "annotations.csv", index=False)
        except OSError as exc:
            raise StoreError(f"cannot write {out / 'annotations'}.{args.format}: {exc.strerror or exc}") from None
    finally:
        con.close()
    skipped = f" ({len(snap.problems)} quarantined file(s) left out; see `python -m pruning verify`)" if snap.problems else ""
    print(f"exported {len(ALL_TABLES) + 1} tables to {out}{skipped}")
    return 0


def cmd_notes(args: argparse.Namespace) -> int:
    from pruning.store.annotations import add_note

    data = add_note(args.run_id, args.text)
    print(f"{args.run_id}: {len(data['notes'])} note(s)")
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    from pruning.store.annotations import set_tags

    data = set_tags(args.run_id, args.tags, remove=args.remove)
    print(f"{args.run_id}: tags {', '.join(data['tags']) or '(none)'}")
    return 0


def cmd_import_notes(args: argparse.Namespace) -> int:
    from pruning.importers.notes import import_notes

    result = import_notes(args.file)
    state = "unchanged (already imported)" if result.skipped else f"published as {result.dirname}"
    print(f"{args.file}: {len(result.run_ids)} reference result sets, {state}")
    return 0


def cmd_import_lm_eval(args: argparse.Namespace) -> int:
    from pruning.importers.lmeval import import_lm_eval

    if args.model is not None and not args.label:
        raise StoreError("--model needs --label (a name for the reference result set)")
    result = import_lm_eval(args.file, run_id=args.run_id, model=args.model, label=args.label, stage=args.stage)
    state = "unchanged (already imported)" if result.skipped else f"published as {result.dirname}"
    print(f"{args.file}: {state}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from pruning.store.compaction import compact
    from pruning.store.layout import store_root

    parts = store_root() / "catalog" / "parts"
    before = {p.name for p in parts.glob("*.parquet")} if parts.is_dir() else set()
    done = compact(full=args.full)
    gone = before - ({p.name for p in parts.glob("*.parquet")} if parts.is_dir() else set())
    print("catalog compacted" if done else "nothing to compact",
          f"(deleted {len(gone)} retired part file(s))" if gone else "")
    return 0


def cmd_repack(args: argparse.Namespace) -> int:
    from pruning.store.repack import repack_store

    report = repack_store(dry_run=args.dry_run, drop_old_parts=args.drop_old_parts, rebuild=args.rebuild_catalog)
    print(("would be: " if args.dry_run else "") + report.line())
    for bundle, columns in sorted(report.kept.items())[:5]:
        print(f"  kept in {bundle}: {', '.join(columns)}")
    return 0
