"""The password gate in Debian's headless Chromium (issue 19): `streamlit run app.py` with
PRUNING_LAB_PASSWORD set shows only the password form — also when the very first request of the
fresh server is a page's URL (Streamlit's legacy pages/ mode) — refuses a wrong password, and after
the right one shows the page that was asked for; a reload stays logged in (a signed, expiring cookie,
issue 29) until Log out, while a fresh browser and a forged cookie meet the form.

Screenshots go to test-artifacts/e2e-security-*.png.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_e2e_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, REPO, _free_port, _wait_healthy

PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.is_file(), reason="Debian's Chromium (/usr/bin/chromium) is not installed"),
]


@pytest.fixture(scope="module")
def locked_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("e2e-security")
    data = tmp / "data"
    shutil.copytree(REPO / "data", data, ignore=shutil.ignore_patterns("jobs", "tmp", ".lock"), dirs_exist_ok=True)
    port = _free_port()
    env = {**os.environ, "PRUNING_LAB_DATA": str(data), "PRUNING_LAB_PASSWORD": PASSWORD, "PYTHONPATH": str(REPO)}
    log = (tmp / "streamlit.log").open("wb")
    proc = subprocess.Popen(  # the bind address comes from .streamlit/config.toml (127.0.0.1)
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _log_in(page, password: str) -> None:
    box = page.locator(".st-key-login_password input")
    box.fill(password)
    page.locator(".st-key-login_submit button").click()


def _expect_locked(page, expect) -> None:
    expect(page.get_by_role("heading", name="Pruning Lab")).to_be_visible(timeout=60_000)
    expect(page.locator(".st-key-login_password input")).to_be_visible()
    page.wait_for_timeout(1500)  # give a page that should not run the time to draw something
    for heading in ("Runs and reference results", "Perplexity grid", "Jobs", "Launch runs"):
        assert page.get_by_role("heading", name=heading).count() == 0, heading
    assert page.locator('[data-testid="stDataFrame"]').count() == 0
    assert page.locator('[data-testid="stPlotlyChart"]').count() == 0
    assert page.get_by_text(re.compile(r"runs and reference sets in the store")).count() == 0  # no sidebar


def test_browser_password_gate(locked_app):
    from playwright.sync_api import expect, sync_playwright

    url = locked_app
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 800})
        try:
            # the first request of the fresh server is a page's URL: still only the form
            page.goto(f"{url}/grid?model=LLaMA-7B")
            _expect_locked(page, expect)
            page.screenshot(path=str(ARTIFACTS / "e2e-security-locked.png"), full_page=True)
            _log_in(page, "wrong password")
            expect(page.get_by_text("Wrong password.")).to_be_visible(timeout=30_000)
            _expect_locked(page, expect)
            _log_in(page, PASSWORD)
            # the page asked for opens after login
            expect(page.get_by_role("heading", name="Perplexity grid")).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=30_000)

            # a reload is a new Streamlit session: the signed login cookie opens it without the form
            page.goto(f"{url}/")
            expect(page.get_by_role("heading", name="Runs and reference results")).to_be_visible(timeout=60_000)
            expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible(timeout=30_000)
            cookie = next(c for c in page.context.cookies() if c["name"] == "pruning_lab_login")
            assert cookie["sameSite"] == "Strict" and cookie["expires"] > time.time() + 11 * 3600
            expect(page.get_by_role("button", name="Log out")).to_be_visible()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(ARTIFACTS / "e2e-security-runs.png"), full_page=True)

            # a fresh browser has no cookie; one with a forged signature is refused
            fresh = browser.new_context(viewport={"width": 1300, "height": 800})
            other = fresh.new_page()
            other.goto(f"{url}/")
            _expect_locked(other, expect)
            forged = cookie["value"][:-4] + ("0000" if not cookie["value"].endswith("0000") else "1111")
            fresh.add_cookies([{**cookie, "value": forged}])
            other.goto(f"{url}/")
            _expect_locked(other, expect)

            # Log out forgets the cookie: the next reload meets the form again
            page.get_by_role("button", name="Log out").click()
            _expect_locked(page, expect)
            page.wait_for_timeout(500)
            assert not [c for c in page.context.cookies() if c["name"] == "pruning_lab_login"]
            page.goto(f"{url}/")
            _expect_locked(page, expect)
            _log_in(page, PASSWORD)
            expect(page.get_by_role("heading", name="Runs and reference results")).to_be_visible(timeout=60_000)
        finally:
            browser.close()
