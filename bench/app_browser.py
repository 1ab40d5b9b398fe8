"""App benchmark as a person sees it: seconds from opening a page's address in Chromium until its
title is painted and until every chart and table of the page is drawn, on the synthetic store of
10,000 runs (``bench.app.build_store``: bench.store + the notes + one detailed 32-block run).
Target: every chart drawn within 3 s per page on a quiet 2-core machine, as a reviewer moves between
pages (in-app navigation: a click on the sidebar's link, nothing reloaded).

    python -m bench.app_browser [--runs 10000] [--repeat 3]

A real ``streamlit run app.py`` server (the shipped .streamlit config) serves the store; each
measurement opens the page's address in a new tab. "Drawn" means: no Streamlit element is still
running, every ``st.plotly_chart`` holds a plotly SVG and every shown dataframe its canvas. Three
figures per page: the first visit after the server started (its caches empty, a new browser); a new
browser each time (a colleague pasting a link: Chromium fetches and parses the app's scripts,
plotly's bundle among them); and a browser that has shown the page once (a reviewer moving between
pages in a meeting: scripts cached); and in-app navigation, the sidebar's links clicked in one tab
that stays loaded (how a reviewer moves in a meeting). The 1-minute load average is recorded before each page.
Results go to bench/RESULTS.md, section "app-browser".
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._results import markdown_table, write_section

log = logging.getLogger("bench.app_browser")
REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
TARGET_S = 3.0
VIEWPORT = {"width": 1500, "height": 1000}
#: page -> (address after the host, charts the page draws with the bench's selection)
PAGES: dict[str, tuple[str, int]] = {
    "study": ("/study", 2),
    "runs": ("/", 0),
    "grid": ("/grid?model=LLaMA-7B&sparsity=0.7", 1),
    "spectra": ("/spectra?runs={run}", 2),
    "attention": ("/attention?runs={run}", 1),
    "zeroshot": ("/zeroshot", 0),
    "compare": ("/compare?runs={run},syn-000001", 1),
    "jobs": ("/jobs", 0),
    "launch": ("/launch", 0),
}
DRAWN_JS = """([charts]) => {
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;  // a script still running
    if (!document.querySelector('h1')) return false;
    const plots = document.querySelectorAll('[data-testid="stPlotlyChart"]');
    if (plots.length < charts) return false;
    for (const p of plots) if (!p.querySelector('.main-svg')) return false;
    for (const d of document.querySelectorAll('[data-testid="stDataFrame"]'))  // shown ones (not in a closed expander)
        if (d.checkVisibility() && !d.querySelector("canvas")) return false;
    return true;
}"""


#: page -> (its link in the sidebar's navigation, its title): in-app navigation clicks the link
NAV: dict[str, tuple[str, str]] = {
    "study": ("Allocation study", "Allocation study"), "runs": ("Runs", "Runs and reference results"),
    "grid": ("Perplexity grid", "Perplexity grid"), "spectra": ("Spectra", "Spectra"),
    "attention": ("Attention", "Attention statistics"), "zeroshot": ("Zero-shot", "Zero-shot accuracy"),
    "compare": ("Compare", "Compare runs"), "jobs": ("Jobs", "Jobs"), "launch": ("Launch", "Launch runs"),
}
NAV_DRAWN_JS = """([title, charts]) => {
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;  // a script still running
    const h1 = document.querySelector('h1');
    if (!h1 || !h1.textContent.startsWith(title)) return false;  // still the page navigated from
    const plots = document.querySelectorAll('[data-testid="stPlotlyChart"]');
    if (plots.length < charts) return false;
    for (const p of plots) if (!p.querySelector('.main-svg')) return false;
    for (const d of document.querySelectorAll('[data-testid="stDataFrame"]'))
        if (d.checkVisibility() && !d.querySelector("canvas")) return false;
    return true;
}"""


def navigate(page, name: str, charts: int) -> float:
    """Seconds from a click on ``name``'s sidebar link until its page is drawn (the app stays loaded:
    no scripts fetched or parsed, the server's caches warm), as a reviewer moves between pages."""
    link, title = NAV[name]
    t0 = time.perf_counter()
    page.locator('[data-testid="stSidebarNav"]').get_by_role("link", name=link, exact=True).click()
    page.wait_for_function(NAV_DRAWN_JS, arg=[title, charts], timeout=120_000, polling=50)
    return time.perf_counter() - t0


def in_app_navigation(browser, url: str, rounds: int) -> dict[str, float]:
    """{page: median seconds of :func:`navigate` over ``rounds`` tours of every page}, in one tab
    opened on ``url`` (whose address selects the runs the chart pages draw)."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(url)
        page.wait_for_function(DRAWN_JS, arg=[PAGES["compare"][1]], timeout=120_000, polling=50)
        times: dict[str, list[float]] = {name: [] for name in PAGES}
        for _ in range(rounds):
            for name, (_, charts) in PAGES.items():
                times[name].append(navigate(page, name, charts))
        return {name: statistics.median(v) for name, v in times.items()}
    finally:
        context.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(data: Path, port: int) -> subprocess.Popen:
    """``streamlit run app.py`` on ``data``; returns once its health check answers."""
    env = {**os.environ, "PRUNING_LAB_DATA": str(data), "PYTHONPATH": str(REPO)}
    env.pop("PRUNING_LAB_PASSWORD", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port", str(port),
         "--server.headless", "true"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the streamlit server did not start within 120 s")


def measure(context, url: str, charts: int) -> tuple[float, float]:
    """(seconds to the painted title, seconds until everything is drawn) of one visit in a new tab
    of ``context`` (a fresh context: a new browser; a used one: its cache holds the app's scripts)."""
    page = context.new_page()
    try:
        t0 = time.perf_counter()
        page.goto(url)
        page.wait_for_selector("h1", timeout=120_000)
        title_s = time.perf_counter() - t0
        page.wait_for_function(DRAWN_JS, arg=[charts], timeout=120_000, polling=50)
        return title_s, time.perf_counter() - t0
    finally:
        page.close()


def new_browser_visit(browser, url: str, charts: int) -> tuple[float, float]:
    """:func:`measure` in a context of its own (no cache, no cookies), closed afterwards."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        return measure(context, url, charts)
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3, help="warm visits per page (after the cold one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from playwright.sync_api import sync_playwright

    from bench.app import build_store

    with tempfile.TemporaryDirectory(prefix="bench-app-browser-") as tmp:
        data = Path(tmp)
        t0 = time.perf_counter()
        detailed = build_store(data, args.runs)
        build_s = time.perf_counter() - t0
        port = _free_port()
        server = start_server(data, port)
        rows = []
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
                tour = in_app_navigation(
                    browser, f"http://127.0.0.1:{port}{PAGES['compare'][0].format(run=detailed)}", args.repeat)
                for name, (path, charts) in PAGES.items():
                    url = f"http://127.0.0.1:{port}{path.format(run=detailed)}"
                    load = os.getloadavg()[0]
                    fresh = [new_browser_visit(browser, url, charts) for _ in range(args.repeat + 1)]
                    cold_title, cold_all = fresh[0]
                    fresh_all = statistics.median(a for _, a in fresh[1:])
                    context = browser.new_context(viewport=VIEWPORT)  # one reviewer's browser: its cache
                    measure(context, url, charts)
                    warm = [measure(context, url, charts) for _ in range(args.repeat)]
                    context.close()
                    warm_title = statistics.median(t for t, _ in warm)
                    warm_all = statistics.median(a for _, a in warm)
                    rows.append({
                        "page": name, "charts": charts, "load avg (1 min) before": round(load, 2),
                        "first visit after start: title s": cold_title, "first visit: all drawn s": cold_all,
                        "new browser: all drawn s": fresh_all,
                        "same browser: title s": warm_title, "same browser: all drawn s": warm_all,
                        "in-app navigation: all drawn s": tour[name],
                        f"<= {TARGET_S:g} s (in-app)": "yes" if tour[name] <= TARGET_S else "NO",
                    })
                    print(f"{name:10s} load {load:4.2f} · first {cold_title:.2f}/{cold_all:.2f} s · new browser "
                          f"{fresh_all:.2f} s · same browser {warm_title:.2f}/{warm_all:.2f} s (title/all drawn) · "
                          f"in-app {tour[name]:.2f} s")
                browser.close()
        finally:
            os.killpg(server.pid, 15)
    body = (
        f"Synthetic store: {args.runs:,} runs (bench.store.generate) + the notes' references + one 32-block run "
        f"with spectra/allocation/attention (built in {build_s:.1f} s), served by `streamlit run app.py`. Each page "
        f"opened by address: once after the server started (cold server caches, new browser), then "
        f"{args.repeat} times in a new browser each (a colleague pasting a link: the browser fetches and parses the "
        f"app's scripts, plotly's among them) and {args.repeat} times in one browser that has visited the page once "
        f"(scripts cached, the page reloaded), and {args.repeat} tours of every page by clicking the sidebar's links in "
        f"one tab (in-app navigation, as a reviewer moves between pages: nothing reloaded); medians. 'All drawn' = no element running, every plotly "
        f"chart has its SVG, every shown dataframe its canvas. The server, Chromium and this script share the 2 cores, "
        f"so the load average during a measurement is never below ~2. Target {TARGET_S:g} s on a quiet 2-core machine; the load average says how quiet it "
        f"was.\n\n" + markdown_table(rows)
    )
    write_section("app-browser", body, command="python -m bench.app_browser " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
