"""Store footprint: the bytes of a results store's bundle files per table and per run, its catalog,
the tracked tree of the checkout, and what one call to a GPU machine can still carry beside it.

    python -m bench.store_footprint [--store data/store] [--no-write]

Why: the tracked tree travels with every call of the device tool, 64 MiB a call in all
(/work/.library/device/README.md, "Limits"), and `scripts/gpu.sh pack` cuts what a bare GPU machine
needs (the models' GGUFs, wheels, corpora: 376 MiB for SmolLM2 and Gemma3) into chunks of what is
left. Also reports what ``python -m pruning repack`` would still save (a dry run). Results go to
bench/RESULTS.md, section "store_footprint".
"""

from __future__ import annotations

import argparse
import logging
import subprocess
from collections import Counter
from pathlib import Path

from bench._results import markdown_table, write_section

log = logging.getLogger("bench.store_footprint")
REPO = Path(__file__).resolve().parents[1]
CALL_LIMIT = 64 * 1024 * 1024
MARGIN = 2 * 1024 * 1024  # scripts/gpu.sh pack keeps this for commits still to come
PACK_MB = 376.2  # scripts/gpu.sh pack for both models on 2026-12-01: GGUFs, wheels, corpora (394,465,280 bytes)
MB = 1024 * 1024


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the files a device call sends: tracked, plus untracked files git does not ignore."""
    out = 0
    for args in (["ls-files", "-z"], ["ls-files", "-o", "--exclude-standard", "-z"]):
        names = subprocess.run(["git", *args], cwd=repo, capture_output=True, check=True).stdout.split(b"\0")
        out += sum((repo / n.decode()).stat().st_size for n in names if n and (repo / n.decode()).is_file())
    return out


def footprint(store: Path) -> dict:
    """Bytes per table over every bundle directory, bundle and run counts, catalog bytes."""
    per_table: Counter[str] = Counter()
    bundles = 0
    for bundle in (store / "runs").iterdir():
        if not bundle.is_dir():
            continue
        bundles += 1
        for f in bundle.iterdir():
            per_table[f.name] += f.stat().st_size
    catalog = sum(f.stat().st_size for f in (store / "catalog").rglob("*") if f.is_file())
    return {"per_table": per_table, "bundles": bundles, "catalog": catalog}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=REPO / "data" / "store")
    p.add_argument("--no-write", action="store_true", help="print only, leave bench/RESULTS.md alone")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from pruning.store.queries import list_runs
    from pruning.store.repack import repack_store

    fp = footprint(args.store)
    runs = len(list_runs(root=args.store))
    total = sum(fp["per_table"].values())
    rows = [{"file": name, "MB": round(size / MB, 2), "KB per bundle": round(size / 1024 / fp["bundles"], 1)}
            for name, size in fp["per_table"].most_common()]
    dry = repack_store(args.store, dry_run=True)
    tree = tree_bytes()
    chunk = CALL_LIMIT - tree - MARGIN
    calls = -(-int(PACK_MB * MB) // chunk) if chunk > 0 else None
    tracked_data = subprocess.run(["git", "ls-files", "-z", "data"], cwd=REPO, capture_output=True,
                                  check=True).stdout.split(b"\0")
    data = sum((REPO / n.decode()).stat().st_size for n in tracked_data if n and (REPO / n.decode()).is_file())
    slim_chunk = CALL_LIMIT - (tree - data) - MARGIN
    slim_calls = -(-int(PACK_MB * MB) // slim_chunk)
    body = "\n".join([
        f"Store `{args.store.relative_to(REPO) if args.store.is_relative_to(REPO) else args.store}`: {fp['bundles']} "
        f"bundle directories, {runs} runs and reference sets; bundle files {total / MB:.2f} MB, catalog "
        f"{fp['catalog'] / MB:.2f} MB. A repack now would leave {dry.bytes_after / MB:.2f} MB of bundle files.",
        "",
        markdown_table(rows, ["file", "MB", "KB per bundle"]),
        "",
        f"Tracked tree (what every device call sends): {tree / MB:.1f} MB of the 64 MiB a call may carry; a chunk "
        f"of `scripts/gpu.sh pack` can hold {chunk / MB:.1f} MB, so the ~{PACK_MB:.0f} MB a bare GPU machine needs "
        f"for both study models take {calls} calls." if calls else "The tree leaves no room to carry anything.",
        f"On the throw-away branch of `scripts/gpu.sh slim` (the tree without data/: {(tree - data) / MB:.1f} MB) a chunk "
        f"holds {slim_chunk / MB:.1f} MB: {slim_calls} calls (measured 2026-12-05: 7 transfers, 3 minutes from the "
        "first to the driver running, docs/gpu.md).",
        "",
        "Before `python -m pruning repack` (2026-12-01, the same 371 bundle directories): bundle files 41.33 MB (runs.parquet "
        "14-15 KB a run, from per-column statistics of its config and environment strings; a `linear` run's "
        "allocation.parquet 25-49 KB, from ~40 spectral columns copied from its spectra table), tree 49.6 MB, "
        "chunks of 12 MiB: 31 calls for the same pack.",
    ])
    print(body)
    if not args.no_write:
        write_section("store_footprint", body, command="python -m bench.store_footprint")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
