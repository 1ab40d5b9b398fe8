"""End to end in Debian's headless Chromium: start `streamlit run app.py` on a copy of the shipped
data, look at the grid and spectra pages, launch a short run of a tiny model from the form, watch
it succeed on the jobs page (worker started by the app) and find it in the runs table.

Screenshots go to test-artifacts/ (gitignored); with PRUNING_LAB_UPDATE_SCREENSHOT=1 the grid page's
also replaces docs/screenshot-grid.png (the README's picture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
RUN_TIMEOUT_MS = 150_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason="Debian's Chromium (/usr/bin/chromium) is not installed; "
        "`apt-get install chromium` (setup.sh does it as root)",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as resp:
                if resp.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"streamlit not healthy at {url} after {timeout_s} s")


def _stop_worker(data: Path) -> None:
    """Stop the worker the app spawned (its pid is in jobs/worker.spawned)."""
    marker = data / "jobs" / "worker.spawned"
    if marker.is_file():
        pid = int(json.loads(marker.read_text())["pid"])
        try:
            os.killpg(pid, signal.SIGTERM)  # the worker leads its own session (start_new_session)
        except (ProcessLookupError, PermissionError):
            pass


@pytest.fixture(scope="module")
def app_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, Path]]:
    tmp = tmp_path_factory.mktemp("e2e")
    data, models = tmp / "data", tmp / "models"
    shipped = REPO / "data"
    shutil.copytree(shipped, data, ignore=shutil.ignore_patterns("jobs", "tmp", ".lock"), dirs_exist_ok=True)
    runs_dir = data / "store" / "runs"
    if not (runs_dir.is_dir() and any(runs_dir.iterdir())):
        from pruning.importers.notes import import_notes  # shipped data not imported yet: import the notes

        import_notes(REPO / "data" / "reference" / "research-notes.txt", root=data / "store")
    from pruning.model.load import alias_dir
    from pruning.model.synthetic import save_tiny_model_dir

    if not (alias_dir("smollm2-135m") / "config.json").is_file():
        pytest.skip("the offline tokenizer (smollm2-135m) is not prepared: run `python -m pruning fetch`")
    save_tiny_model_dir(models / "tiny")
    port = _free_port()
    env = {**os.environ, "PRUNING_LAB_DATA": str(data), "PRUNING_LAB_MODEL_ROOTS": str(models), "PYTHONPATH": str(REPO)}
    log = (tmp / "streamlit.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, data, models
    finally:
        _stop_worker(data)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.copy(tmp / "streamlit.log", ARTIFACTS / "e2e-streamlit.log") if ARTIFACTS.is_dir() else None


def _widget(page, key: str):
    """The container Streamlit gives a keyed widget (class ``st-key-<key>``, dots as dashes)."""
    return page.locator(f".st-key-{key.replace('.', '-')}").first


def _select(page, key: str, option: str) -> None:
    _widget(page, key).get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()


def _search_select(page, key: str, option: str, typed: str | None = None) -> None:
    """Pick ``option`` in a long selectbox: type it (or ``typed``) to filter the (virtualised) list,
    then click the (first) option whose text holds ``option``."""
    box = _widget(page, key).get_by_role("combobox")
    box.scroll_into_view_if_needed()
    box.click()
    box.press_sequentially(typed or option)
    page.get_by_role("option").filter(has_text=option).first.click()


def _fill(page, key: str, value: str) -> None:
    box = _widget(page, key).locator("input")
    box.fill(value)
    box.press("Tab")


def test_browser_grid_launch_jobs_runs(app_url):
    from playwright.sync_api import expect, sync_playwright

    url, data, models = app_url
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        try:
            # ---- grid: LLaMA-7B table with its values drawn in the heatmap
            page.goto(f"{url}/grid?model=LLaMA-7B")
            expect(page.get_by_role("heading", name="Perplexity grid")).to_be_visible(timeout=60_000)
            # the page runs inside app.py's frame even as the first request of a fresh server
            expect(page.locator('[data-testid="stSidebarNav"]')).to_contain_text("Perplexity grid", timeout=30_000)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            expect(chart.locator("text", has_text="22.01").first).to_be_visible(timeout=30_000)
            expect(chart.locator("text", has_text="17.76").first).to_be_visible()
            page.wait_for_timeout(500)
            page.screenshot(path=str(ARTIFACTS / "e2e-grid.png"), full_page=True)
            if os.environ.get("PRUNING_LAB_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture on request only
                shutil.copy(ARTIFACTS / "e2e-grid.png", REPO / "docs" / "screenshot-grid.png")
            # click a cell -> it opens below the chart (plotly selection event)
            box = chart.locator("text", has_text="17.76").first.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.up()
            expect(_widget(page, "grid_cell").locator("input")).to_have_value(
                "SparseGPT / QKVout + split", timeout=30_000
            )
            page.screenshot(path=str(ARTIFACTS / "e2e-grid-cell.png"), full_page=True)

            # ---- launch a short run of the tiny model from the form
            page.goto(f"{url}/launch")
            expect(page.get_by_role("heading", name="Launch runs")).to_be_visible(timeout=60_000)
            _fill(page, "launch.model.name", str(models / "tiny"))
            _select(page, "launch.pruning.method", "magnitude")
            _fill(page, "launch.pruning.sparsity", "0.5")
            _fill(page, "launch.calibration.nsamples", "2")
            _fill(page, "launch.calibration.seqlen", "32")
            _fill(page, "launch.evaluation.seqlen", "64")
            _fill(page, "launch.evaluation.limit_windows", "2")
            _fill(page, "launch.label", "e2e tiny")
            page.get_by_role("button", name="Launch run").click()
            expect(page.get_by_text(re.compile(r"Submitted 1 job"))).to_be_visible(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "e2e-launch.png"), full_page=True)

            # ---- jobs: live list until the job succeeded (fragment refresh every 2 s)
            page.goto(f"{url}/jobs")
            expect(page.get_by_role("heading", name="Jobs")).to_be_visible(timeout=60_000)
            done = page.locator("strong", has_text=re.compile(r"^succeeded$"))
            failed = page.locator("strong", has_text=re.compile(r"^failed$"))
            bar = page.locator('[data-testid="stProgress"] [role="progressbar"]').first
            seen: list[float] = []  # the progress bar as the user watches it, once a second
            deadline = time.time() + RUN_TIMEOUT_MS / 1000
            while time.time() < deadline and not done.count() and not failed.count():
                if bar.count():
                    value = bar.get_attribute("aria-valuenow")
                    if value is not None:
                        seen.append(float(value))
                page.wait_for_timeout(1000)
            assert seen == sorted(seen), f"the job's progress went back: {seen}"
            page.screenshot(path=str(ARTIFACTS / "e2e-jobs.png"), full_page=True)
            assert not failed.count(), page.locator('[data-testid="stCode"]').first.inner_text()
            expect(done.first).to_be_visible()
            # the finished job shows its headline numbers with their protocol, and how long it took
            expect(page.get_by_text(re.compile(r"^result: wiki perplexity .* \(budgeted 2/"))).to_be_visible(timeout=30_000)
            expect(page.get_by_text(re.compile(r"took \d+ s"))).to_be_visible()
            run_id = re.search(r"magnitude-[0-9a-f]{12}", page.get_by_text("run magnitude-").first.inner_text()).group(
                0
            )

            # ---- runs: the finished job links to its run, found in the table and picked in the sidebar
            page.get_by_role("link", name="Open the run").first.click()
            expect(page.get_by_role("heading", name="Runs and reference results")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(re.compile(r"^1 of \d+ rows"))).to_be_visible(timeout=30_000)
            expect(_widget(page, "runs_search").locator("input")).to_have_value(run_id)
            assert f"runs={run_id}" in page.url
            page.wait_for_timeout(1500)  # let the table repaint before the screenshot
            page.screenshot(path=str(ARTIFACTS / "e2e-runs.png"), full_page=True)

            # ---- spectra: the new run's alpha per block (the tiny model has 2 blocks) and an ESD
            page.goto(f"{url}/spectra")
            expect(page.get_by_role("heading", name="Spectra")).to_be_visible(timeout=60_000)
            expect(page.get_by_text(re.compile(r"^2 blocks"))).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stPlotlyChart"]')).to_have_count(3, timeout=60_000)
            page.wait_for_timeout(1500)
            # the ESD's λ axis (log) spans the eigenvalues, within a decade on each side (it ran to 10^144)
            esd = page.locator(".js-plotly-plot").nth(2)
            span = esd.evaluate("""gd => {
                const xs = gd._fullData.flatMap(t => Array.from(t.x || [])).map(Number).filter(v => v > 0);
                return {range: gd._fullLayout.xaxis.range, type: gd._fullLayout.xaxis.type,
                        lo: Math.log10(Math.min(...xs)), hi: Math.log10(Math.max(...xs))};
            }""")
            assert span["type"] == "log", span
            assert span["lo"] - 1 <= span["range"][0] <= span["lo"] and span["hi"] <= span["range"][1] <= span["hi"] + 1, span
            page.screenshot(path=str(ARTIFACTS / "e2e-spectra.png"), full_page=True)
        finally:
            browser.close()


def test_browser_budgeted_smoke_run_stays_out_of_the_full_protocol_grid(app_url):
    """Issue 15 in the browser: a smoke run (1 window of 8 tokens, perplexity 1,837) published next
    to the shipped SmolLM2 runs leaves the Wanda / 70 % / `all` cell (392.88 ×10) and its ε curve as
    they were; choosing its protocol shows it, under a warning. The address carries the model."""
    from playwright.sync_api import expect, sync_playwright
    from smoke_runs import publish_smoke_run

    url, data, _ = app_url
    publish_smoke_run(root=data / "store")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 1100})
        try:
            page.goto(f"{url}/grid?model=smollm2-135m")
            expect(page.get_by_role("heading", name="Perplexity grid")).to_be_visible(timeout=60_000)
            heatmap = page.locator('[data-testid="stPlotlyChart"]').first
            expect(heatmap.locator("text", has_text="392.88").first).to_be_visible(timeout=60_000)
            expect(heatmap.locator("text", has_text="×10").first).to_be_visible()
            assert heatmap.locator("text", has_text="1837").count() == 0
            expect(_widget(page, "grid_protocol").locator("input")).to_have_value(
                re.compile(r"^full: 175 × 2048 tokens"), timeout=30_000)
            _search_select(page, "grid_cell", "Wanda / all")
            curve = page.locator('[data-testid="stPlotlyChart"]').nth(1)
            expect(curve.locator("text", has_text="ε (allocation spread)")).to_be_visible(timeout=30_000)
            # the curve's y axis spans the sweep's values (up to 2,710), never the smoke run's 1,837 spike as a point
            assert curve.locator(".scatterlayer .point").count() == 10
            page.screenshot(path=str(ARTIFACTS / "e2e-grid-protocol-full.png"), full_page=True)
            _search_select(page, "grid_protocol", "budgeted: 1 of 44,778 windows × 8 tokens", typed="budgeted")
            expect(page.get_by_text(re.compile("^Budgeted protocol"))).to_be_visible(timeout=30_000)
            expect(heatmap.locator("text", has_text="1837").first).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "e2e-grid-protocol-budgeted.png"), full_page=True)
        finally:
            browser.close()


def test_browser_pasted_link_restores_the_grid_view(app_url):
    """Issue 17: the grid's view is in the address. A link pasted into a fresh browser restores
    model, sparsity, dataset, ε and the opened cell; changing the model rewrites the address."""
    from playwright.sync_api import expect, sync_playwright

    url, _, _ = app_url
    link = f"{url}/grid?model=smollm2-135m&sparsity=0.6&dataset=lee&eps=0.3&cell=Wanda/all"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()  # a fresh browser
            page.goto(link)
            expect(page.get_by_role("heading", name="Perplexity grid")).to_be_visible(timeout=60_000)
            expect(_widget(page, "grid_cell").locator("input")).to_have_value("Wanda / all", timeout=60_000)
            for key, value in (("grid_model", "smollm2-135m"), ("grid_sparsity", "60%"), ("grid_dataset", "lee"),
                               ("grid_epsilon", "0.3")):
                expect(_widget(page, key).locator("input")).to_have_value(value)
            expect(page.locator('[data-testid="stPlotlyChart"]').first.locator("text", has_text="181.84").first
                   ).to_be_visible(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "e2e-grid-from-link.png"))
            _select(page, "grid_model", "LLaMA-7B")
            expect(page).to_have_url(re.compile(r"[?&]model=LLaMA-7B(&|$)"), timeout=30_000)
            assert "sparsity=0.7" in page.url and "dataset=wikitext2" in page.url
            # "Open cell" names a cell of the new table, and the detail below is that cell (it was stale)
            expect(page.locator('[data-testid="stPlotlyChart"]').first.locator("text", has_text="22.01").first
                   ).to_be_visible(timeout=30_000)
            opened = _widget(page, "grid_cell").locator("input").input_value()
            row, column = opened.split(" / ")
            cell = re.search(r"cell=([^&]+)", page.url).group(1)
            assert urllib.parse.unquote(cell) == f"{row}/{column}", (opened, page.url)
            # presentation mode and colouring are in the link too: a fresh browser opens them as they were
            page.get_by_text("Presentation mode").click()
            expect(page).to_have_url(re.compile(r"[?&]present=1(&|$)"), timeout=30_000)
            shared = page.url
            again = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
            again.goto(shared)
            # presentation mode: no page title, the grid first and the view's settings folded below it
            expect(again.get_by_text("View settings: model, sparsity")).to_be_visible(timeout=60_000)
            assert again.get_by_role("heading", name="Perplexity grid").count() == 0
            expect(_widget(again, "grid_present").locator("input")).to_be_checked(timeout=30_000)
            chart = again.locator('[data-testid="stPlotlyChart"]').first
            # three significant digits on the projector (22.01 → 22.0); every digit stays in the hover
            expect(chart.locator("text", has_text="22.0").first).to_be_visible(timeout=30_000)
            size = chart.locator("text", has_text="22.0").first.evaluate("e => parseFloat(getComputedStyle(e).fontSize)")
            assert size >= 14, size  # projector-sized cell text
            again.wait_for_timeout(800)
            again.screenshot(path=str(ARTIFACTS / "e2e-grid-presentation.png"))
            if os.environ.get("PRUNING_LAB_UPDATE_SCREENSHOT") == "1":
                shutil.copy(ARTIFACTS / "e2e-grid-presentation.png", REPO / "docs" / "screenshot-grid-presentation.png")
            # a reopened link with eps=all shows "best of all" (it showed "Choose an option"), eps=0.2 shows 0.2
            for eps, shown in (("all", "best of all"), ("0.2", "0.2")):
                third = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
                third.goto(f"{url}/grid?model=LLaMA-7B&sparsity=0.7&eps={eps}")
                expect(_widget(third, "grid_epsilon").locator("input")).to_have_value(shown, timeout=60_000)
        finally:
            browser.close()


STUDY_CALIBRATION = "wiki:train · 128 × 2048"


def test_browser_presentation_grid_fits_a_1280x720_projector(app_url):
    """Issue 29: in presentation mode at 1280 x 720 the study's grid starts above the fold, no cell's text
    is wider than its cell (the mean ± std was one line that ran into the next cell) and no column header
    overlaps another (three long headers printed over each other). Measured on the chart's SVG boxes."""
    from playwright.sync_api import expect, sync_playwright

    url, _, _ = app_url
    link = (f"{url}/grid?model=smollm2-135m&sparsity=0.7&dataset=wiki&present=1&calibration="
            + urllib.parse.quote(STUDY_CALIBRATION))
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 720}).new_page()
            page.goto(link)
            chart = page.locator('[data-testid="stPlotlyChart"]').first
            expect(chart.locator("text", has_text="± 76.2").first).to_be_visible(timeout=60_000)  # OWL 698.80 ± 76.15
            page.wait_for_timeout(800)
            page.screenshot(path=str(ARTIFACTS / "e2e-grid-presentation-1280.png"))
            boxes = chart.evaluate("""c => {
                const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
                return {
                  ticks: [...c.querySelectorAll('g.xtick')].map(g => ({x: g.getBoundingClientRect().left
                           + g.getBoundingClientRect().width / 2, box: r(g), text: g.textContent})),
                  cells: [...c.querySelectorAll('g.textpoint')].map(g => ({box: r(g), text: g.textContent})),
                  heat: r(c.querySelector('g.heatmaplayer') || c),
                };
            }""")
            ticks = sorted(boxes["ticks"], key=lambda t: t["x"])
            assert len(ticks) == 9, [t["text"] for t in ticks]  # dense, uniform, OWL, DLP, ATP, 4 linear columns
            pitch = min(b["x"] - a["x"] for a, b in zip(ticks, ticks[1:]))
            for a, b in zip(ticks, ticks[1:]):  # headers side by side, never over each other
                assert a["box"][2] <= b["box"][0] + 0.5, (a["text"], b["text"], a["box"], b["box"])
            assert boxes["cells"], "no cell text found"
            for cell in boxes["cells"]:
                width = cell["box"][2] - cell["box"][0]
                assert width <= pitch - 2, (cell["text"], width, pitch)  # inside its column (2 px gap)
            assert boxes["heat"][1] < 720, boxes["heat"]  # the grid starts above the fold
            assert "H" + "α" in " ".join(t["text"] for t in ticks)  # abbreviated, with the legend in the caption
            expect(page.get_by_text("Hα = hessian_alpha")).to_be_visible()
        finally:
            browser.close()


def test_browser_study_page_link_restores_the_cell(app_url):
    """Issue 29: the Study page shows the study table's numbers, the verdict and every family's sparsity
    per block; its link opens the same cell in a fresh browser."""
    from playwright.sync_api import expect, sync_playwright

    from pruning.study import study_runs, summarize, verdicts

    url, data, _ = app_url
    summary = summarize(study_runs(data / "store"))
    row = summary[(summary["method"] == "sparsegpt") & (summary["sparsity"] == 0.7) & (summary["family"] == "depth")]
    atp = f"{row.iloc[0]['wiki_mean']:.2f} ± {row.iloc[0]['wiki_std']:.2f}"  # 194.06 ± 1.30
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.goto(f"{url}/study")
            expect(page.get_by_role("heading", name="Allocation study")).to_be_visible(timeout=60_000)
            expect(page).to_have_url(re.compile(r"method=wanda&sparsity=0.7"), timeout=30_000)  # opens on ours' cell
            expect(page.get_by_text("ours does not beat every rival").first).to_be_visible(timeout=30_000)
            _select(page, "study_method", "sparsegpt")
            expect(page).to_have_url(re.compile(r"[?&]method=sparsegpt(&|$)"), timeout=30_000)
            shared = page.url
            again = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()  # a fresh browser
            again.goto(shared)
            expect(_widget(again, "study_method").locator("input")).to_have_value("sparsegpt", timeout=60_000)
            expect(_widget(again, "study_sparsity").locator("input")).to_have_value("70%")
            table = _widget(again, "study_table")
            expect(table).to_be_visible(timeout=30_000)
            # the dataframe is drawn on a canvas; its cells are also in an offscreen table for assistive tech
            expect(table.locator("td", has_text=atp).first).to_be_attached(timeout=30_000)
            verdict = verdicts(summary, "wiki")
            expect(again.get_by_text("wiki test: no verdict").first if verdict[
                (verdict["method"] == "sparsegpt") & (verdict["sparsity"] == 0.7)].iloc[0]["verdict"] == "no data"
                else again.get_by_text("wiki test:").first).to_be_visible()
            chart = again.locator('[data-testid="stPlotlyChart"]').first
            expect(chart.locator("text", has_text="sparsity per block, every family")).to_be_visible(timeout=30_000)
            legend = chart.locator("g.legend text.legendtext").all_text_contents()
            assert {"uniform", "OWL (outlier ratio)", "ATP (rising with depth)", "the notes' Hessian α"} <= set(legend), legend
            again.wait_for_timeout(500)
            again.screenshot(path=str(ARTIFACTS / "e2e-study-from-link.png"), full_page=True)
        finally:
            browser.close()
