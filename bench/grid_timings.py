"""Where the time of a grid sweep goes: per-stage timings of the stored runs of one sweep tag.

The runs of ``sweeps/grid-smollm2.yaml`` were made on a GPU machine; every run stores its stage
timings (``timings_json``) and the machine it ran on (``env_json``), so this benchmark reads them
back from the store instead of re-running anything, and records the summary in bench/RESULTS.md.

    python -m bench.grid_timings [--tag grid-smollm2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path

import pandas as pd

from bench._results import write_section

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
STAGES = ("load", "calibration_sample", "spectra", "owl", "prune", "evaluation", "total")


def grid_timings(tag: str, root: Path | str | None = None) -> pd.DataFrame:
    """One row per succeeded run carrying ``tag``: run_id, method, revision (code), device, created_at and one
    column (seconds) per stage of :data:`STAGES` (NaN when the run had no such stage)."""
    from pruning.store.queries import run_sql

    if not re.fullmatch(r"[\w.\-]+", tag):
        raise SystemExit(f"tag {tag!r} is invalid; accepted: letters, digits, '_', '.', '-'")
    runs = run_sql(
        "SELECT run_id, method, created_at, timings_json, env_json FROM runs "
        f"WHERE kind = 'run' AND status = 'succeeded' AND list_contains(config_tags, '{tag}')",
        root=root,
    )
    if runs.empty:
        raise SystemExit(f"no succeeded runs tagged {tag!r} in the store; accepted: a tag of `python -m pruning runs`")
    rows = []
    for r in runs.itertuples():
        timings = json.loads(r.timings_json or "{}")
        env = json.loads(r.env_json or "{}")
        gpus = env.get("device", {}).get("gpus") or ["cpu"]
        code = env.get("code_revision") or {}  # no git checkout: the source digest names the code
        revision = str(code.get("commit") or (f"src:{code['source_sha256']}" if code.get("source_sha256") else "unrecorded"))[:10]
        rows.append({"run_id": r.run_id, "method": r.method, "revision": revision, "device": ", ".join(gpus),
                     "created_at": r.created_at,
                     **{s: timings.get(s) for s in STAGES}})
    return pd.DataFrame(rows)


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Median and max seconds per stage, per code revision and method (a revision's runs were made
    together; stages change cost between revisions), with the run count."""
    keys = ["revision", "method"]
    stats = frame.groupby(keys)[list(STAGES)].agg(["median", "max"]).round(1)
    stats.columns = [f"{stage} {agg}" for stage, agg in stats.columns]
    stats.insert(0, "runs", frame.groupby(keys).size())
    first = frame.groupby("revision")["created_at"].min()
    stats = stats.reset_index()
    return stats.sort_values(["revision", "method"], key=lambda c: c.map(first) if c.name == "revision" else c).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tag", default="grid-smollm2")
    p.add_argument("--root", default=str(REPO / "data" / "store"), help="results store (default: the shipped one)")
    p.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    p.add_argument("--section", default="grid_timings", help="section of bench/RESULTS.md to write "
                   "(e.g. study_timings for --tag allocation-study)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    frame = grid_timings(args.tag, args.root)
    table = summary(frame)
    devices = ", ".join(sorted(set(frame["device"])))
    body = (
        f"Stage timings (seconds) of the {len(frame)} stored runs tagged `{args.tag}`, read from the store; "
        f"made on: {devices}, up to eight runs sharing one GPU (docs/FINDINGS.md says how many per batch). "
        "`spectra` for hessian_alpha runs includes the Hessian eigendecompositions (cached per model after the first).\n\n"
        + table.to_markdown(index=False)
    )
    log.info("%s", body)
    if not args.no_write:
        write_section(args.section, body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
