"""`python -m pruning report --runs ID [ID ...] [--views grid,spectra,compare,zeroshot] --out FILE.html`.

Writes the meeting report (``pruning.app_support.report``): one self-contained HTML file, plotly.js
inlined, that opens offline. ESD eigenvalues come from the store's spectra sets; no model is loaded.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pruning.app_support.report_views import DEFAULT_TITLE, VIEWS
from pruning.errors import ConfigError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a self-contained HTML meeting report (grid, spectra, compare, zero-shot)")
    p.add_argument("--runs", nargs="+", required=True, metavar="ID",
                   help="run or reference-set ids, space- or comma-separated (see `python -m pruning runs`)")
    p.add_argument("--views", default=",".join(VIEWS), help=f"comma-separated, of {','.join(VIEWS)} (default: all)")
    p.add_argument("--title", default=DEFAULT_TITLE)
    p.add_argument("--model", default=None, help="grid: only this model's grids")
    p.add_argument("--protocol", default=None, help="grid: this perplexity protocol key (default: the runs' own)")
    p.add_argument("--metric", default="alpha_peak", help="spectra: the metric drawn per block")
    p.add_argument("--esd-matrix", default=None, help="spectra: the matrix whose ESD is drawn (default: the first)")
    p.add_argument("--out", required=True, help="output FILE.html")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pruning.app_support.report import build_report, stored_eigenvalues

    out = Path(args.out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"--out: {args.out!r} is not an .html file; accepted: FILE.html")
    if out.is_dir():
        raise ConfigError(f"--out: {args.out!r} is a directory; accepted: a FILE.html path (a file inside it)")
    blocking = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise ConfigError(f"--out: {args.out!r} cannot be written: {str(blocking)!r} is a file, not a directory")
    run_ids = [r.strip() for arg in args.runs for r in arg.split(",") if r.strip()]
    views = [v for v in args.views.split(",") if v.strip()]
    document = build_report(run_ids, views, title=args.title, model=args.model, protocol=args.protocol,
                            metric=args.metric, esd_matrix=args.esd_matrix,
                            eigenvalues=stored_eigenvalues())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    log.info("wrote %s (%.1f MB, %d run(s))", out, out.stat().st_size / 1e6, len(run_ids))
    return 0
