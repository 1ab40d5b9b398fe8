"""``spectra-backfill``: store the spectra sets of runs published before runs stored them.

    python -m pruning spectra-backfill             # every run of the store without a stored set (CPU)
    python -m pruning spectra-backfill --dry-run   # only list what is missing

The app draws ESDs only from stored sets (``pruning.store.spectra_sets``); see
``pruning.run.spectra_backfill`` for how a run's set is recomputed and checked against its rows.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("spectra-backfill",
                       help="store the weight/Hessian spectra sets missing for runs of the store (ESD plots)")
    p.add_argument("--device", default="cpu", help="where to recompute spectra and calibration (default cpu)")
    p.add_argument("--dry-run", action="store_true", help="only list the runs whose spectra sets are missing")
    p.set_defaults(handler=cmd_spectra_backfill)


def cmd_spectra_backfill(args: argparse.Namespace) -> int:
    from pruning.run.spectra_backfill import backfill_spectra, missing_spectra, outcome_frame

    if args.dry_run:
        groups = missing_spectra()
        for group in groups:
            print(f"missing: {group.source} spectra ({group.eig_dtype}) of {group.model} for {len(group.run_ids)} run(s)")
        print(f"{len(groups)} spectra set(s) missing")
        return 0
    frame = outcome_frame(backfill_spectra(device=args.device, progress=lambda text: print(text, flush=True)))
    print(frame.to_string(index=False) if len(frame) else "every run's spectra are stored")
    return 1 if (frame["status"] == "skipped").any() else 0
