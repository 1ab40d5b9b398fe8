"""The frame every page runs in: the password gate (docs/security.md), the store's quarantine
banner, and the check that a page runs inside app.py's ``st.navigation`` frame."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import streamlit as st
from streamlit import config
from streamlit.runtime.pages_manager import PagesManager

from pages_support.loaders import catalog_version, load_quarantined
from pages_support.sidebar import render_sidebar
from pruning.app_support.access import LOGIN_LIMITER, configured_password, session_is_open, session_token
from pruning.app_support.login_cookie import (
    COOKIE_NAME, clear_cookie_script, cookie_is_valid, login_hours, make_cookie, server_secret, set_cookie_script,
)
from pruning.app_support.plain import plain
from pruning.paths import cache_dir

log = logging.getLogger(__name__)

_IN_FRAME: ContextVar[bool] = ContextVar("pruning_lab_in_frame", default=False)  # True while app.py runs a page
AUTH_KEY = "_auth_token"  # session_state: pruning.app_support.access.session_token of the app's password
COOKIE_SCRIPT_KEY = "_login_cookie_script"  # session_state: a cookie script for the browser, sent on the next run
LOGGED_OUT_KEY = "_logged_out"  # session_state: this session pressed Log out (its login cookie no longer counts)
SECRET_FILE = "login-secret"  # in the cache directory: the server secret of the login cookies


def quarantine_banner(max_listed: int = 8) -> None:
    """A warning naming the store files left out of every view (unreadable or not matching the
    schema) and how to set them aside; nothing when the store is clean. Cached on the catalog
    version, so a page run pays one dictionary lookup."""
    try:
        problems = load_quarantined(catalog_version())
    except Exception as exc:  # the banner must never take a page down
        log.warning("quarantine check failed: %s", exc)
        return
    if not problems:
        return
    lines = [f"- {plain(path)}: {plain(reason)}" for path, reason in problems[:max_listed]]
    if len(problems) > max_listed:
        lines.append(f"- and {len(problems) - max_listed} more")
    st.warning(
        f"{len(problems)} store file(s) cannot be read and are left out of every view (never deleted):\n\n"
        + "\n".join(lines)
        + "\n\nRun `python -m pruning verify --repair` to move them aside and rebuild the catalog.",
        icon=":material/report:",
    )


# ---- the password gate ----------------------------------------------------------------------------------------------------------
def app_password() -> str | None:
    """``PRUNING_LAB_PASSWORD``, else ``password`` of Streamlit secrets; None when neither is set
    (a missing secrets file is no error: ``load_if_toml_exists`` only probes)."""
    secrets = st.secrets if st.secrets.load_if_toml_exists() else None
    return configured_password(os.environ, secrets)


def _secret() -> bytes:
    """The server secret of the login cookies (``pruning.app_support.login_cookie.server_secret``)."""
    return server_secret(cache_dir() / SECRET_FILE)


def _login_hours() -> float:
    """The login cookie's lifetime (``PRUNING_LAB_LOGIN_HOURS``); a bad value turns the cookie off and says why."""
    try:
        return login_hours(os.environ)
    except ValueError as exc:
        log.warning("%s; the login cookie is off", exc)
        return 0.0


def _cookie_login(password: str) -> bool:
    """A new session (a reload) of a browser that logged in within the login's lifetime: its signed
    cookie (``pruning.app_support.login_cookie``) opens it without the form."""
    hours = _login_hours()
    if hours <= 0 or st.session_state.get(LOGGED_OUT_KEY):
        return False
    try:
        value = st.context.cookies.get(COOKIE_NAME)
    except Exception:  # no request context (e.g. a bare script run)
        return False
    if not value:
        return False
    if cookie_is_valid(value, password, _secret(), hours):
        st.session_state[AUTH_KEY] = session_token(password)
        return True
    log.info("login cookie refused (expired, forged, or made with another password or secret)")
    return False


def logged_in() -> bool:
    """True when the app has no password, this session gave the current one, or this browser holds a
    valid login cookie (a reload within the login's lifetime)."""
    password = app_password()
    if session_is_open(st.session_state.get(AUTH_KEY), password):
        return True
    return password is not None and _cookie_login(password)


def send_cookie_script() -> None:
    """Send the pending cookie script (set after a login, cleared after Log out) to the browser, once."""
    script = st.session_state.pop(COOKIE_SCRIPT_KEY, None)
    if script:
        st.html(script, unsafe_allow_javascript=True)


def login_form() -> None:
    """Draw only the password form and end the script run: no sidebar, no store read, no page code."""
    password = app_password()
    st.title("Pruning Lab")
    st.caption("This server asks for a password.")
    with st.form("login", clear_on_submit=True):  # keyed: the same widgets whether app.py or a page drew them
        typed = st.text_input("Password", type="password", key="login_password")
        submitted = st.form_submit_button("Log in", type="primary", key="login_submit")
    if submitted and password is not None:
        accepted, message = LOGIN_LIMITER.attempt(typed, password, source=_client())
        if accepted:
            st.session_state[AUTH_KEY] = session_token(password)
            del st.session_state["login_password"]  # the typed password does not stay in the session
            st.session_state.pop(LOGGED_OUT_KEY, None)
            hours = _login_hours()
            if hours > 0:  # sent on the next run, inside the app (a rerun drops what this run drew)
                st.session_state[COOKIE_SCRIPT_KEY] = set_cookie_script(
                    make_cookie(password, _secret(), hours), hours)
            st.rerun()
        st.error(message)
    send_cookie_script()  # after Log out: the browser forgets its login cookie
    st.stop()


def _client() -> str:
    """Where a login came from, for the log: the client's address when Streamlit knows it."""
    context = getattr(st, "context", None)
    return str(getattr(context, "ip_address", None) or "unknown address")


def log_out() -> None:
    """Forget this session's login and this browser's login cookie (the sidebar's Log out button)."""
    st.session_state.pop(AUTH_KEY, None)
    st.session_state[LOGGED_OUT_KEY] = True
    st.session_state[COOKIE_SCRIPT_KEY] = clear_cookie_script()


# ---- the frame -----------------------------------------------------------------------------------------------------------
@contextmanager
def app_frame() -> Iterator[None]:
    """app.py runs the sidebar and the chosen page inside this block; pages check it with
    :func:`enter_page`. The flag is reset on exit (also on st.stop / st.rerun), so a later script
    run of the same thread starts outside the frame again."""
    token = _IN_FRAME.set(True)
    try:
        yield
    finally:
        _IN_FRAME.reset(token)


def enter_page() -> None:
    """First call of every page: make sure the page runs inside app.py's ``st.navigation`` frame.

    Streamlit starts a process in its legacy ``pages/``-directory mode and leaves it only when the
    entry script calls ``st.navigation``; if the very first request of a fresh server is a page URL
    (a bookmark of /grid), it runs that page file alone — no sidebar, no page config. Then leave
    that mode and rerun, so app.py (and the same page) run in the frame."""
    if _IN_FRAME.get():
        return
    if config.get_option("global.appTest"):
        # AppTest resets that mode before every run, so a page runs alone there each time; a rerun
        # would drop the button click being tested. Gate it and draw the shared sidebar in place.
        if not logged_in():
            login_form()  # ends the run
        quarantine_banner()
        render_sidebar()
        return
    log.info("page started outside app.py (Streamlit's legacy pages/ mode); rerunning inside the frame")
    PagesManager.uses_pages_directory = False
    st.rerun()  # raises: nothing of the page runs; app.py's password gate comes first in the frame
