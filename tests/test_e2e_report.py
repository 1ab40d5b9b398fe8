"""The meeting report opens offline in Debian's headless Chromium: written by `python -m pruning report`
on a copy of the shipped store, opened from file:// with every network request refused, every plotly
figure drawn and the grid's numbers visible as text. Screenshot: test-artifacts/report.png."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import pytest
from test_app_pages import fill_with_notes
from test_e2e_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO

from pruning.app_support.formatting import format_ppl
from pruning.app_support.grid import build_grid, dense_perplexity
from pruning.calibration.protocol import DEFAULT_CALIBRATION, by_calibration

RUNS = ["wanda-e69c522287e9", "wanda-ce230e9e0466", "wanda-eaa4312dbf80"]
OFFLINE_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


def test_browser_report_opens_offline_with_the_grid_numbers(data_dir: Path, tmp_path: Path):
    from playwright.sync_api import expect, sync_playwright

    from pruning.store import queries

    fill_with_notes(data_dir)
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "pruning", "report", "--runs", *RUNS, "--views", "grid,spectra,compare,zeroshot",
         "--title", "Review 2026-11-30", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    document = out.read_text(encoding="utf-8")
    n_figures = document.count('class="plotly-graph-div"')
    assert n_figures >= 4  # two grids, metric per block, sparsity per block (+ the ESD where the model is here)

    cells = queries.perplexity_cells()
    wanted = []
    for sparsity in (0.5, 0.7):
        protocol = cells.loc[cells["run_id"].isin(RUNS) & (cells["dataset"] == "wiki"), "protocol"].iloc[0]
        dense = dense_perplexity(queries.perplexity_cells(model="smollm2-135m", stage="dense"), "smollm2-135m", "wiki",
                                 protocol)
        # the chosen runs' calibration (the allocation study's wiki:train runs are a grid of their own)
        grid = build_grid(by_calibration(cells, DEFAULT_CALIBRATION), model="smollm2-135m", sparsity=sparsity,
                          dataset="wiki", protocol=protocol, dense=dense)
        wanted += [format_ppl(grid.best.loc[r, c]) for r in grid.rows for c in grid.columns if grid.count.loc[r, c]]

    ARTIFACTS.mkdir(exist_ok=True)
    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=OFFLINE_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)

        def refuse_outside(route) -> None:
            if route.request.url.startswith(("file:", "data:", "blob:")):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", refuse_outside)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("requestfailed", lambda req: outside.append(req.url))
        try:
            page.goto(out.as_uri())
            expect(page.get_by_role("heading", name="Review 2026-11-30")).to_be_visible(timeout=30_000)
            page.wait_for_function(
                "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n"
                " && [...document.querySelectorAll('.plotly-graph-div')].every(d => d.querySelector('.main-svg'))",
                arg=n_figures, timeout=60_000,
            )
            body = page.locator("body").inner_text()
            missing = [v for v in wanted if v not in body]
            assert not missing, missing
            expect(page.locator("table.grid td.mark", has_text="444.89")).to_be_visible()
            # the heatmap itself draws the numbers (plotly text in the SVG)
            expect(page.locator(".plotly-graph-div text", has_text="444.89").first).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        finally:
            browser.close()
    assert not errors, errors
    assert not outside, outside
    assert html.escape("Review 2026-11-30") in document
