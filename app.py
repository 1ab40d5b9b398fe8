"""Pruning Lab dashboard: `streamlit run app.py`.

The frame only: one ``st.Page`` per task under ``pages/``, and the shared sidebar (model and run
pickers) whose choices every page reads through ``pages_support.common``. Data come from the results
store (``pruning.store``) via cached loaders keyed on the store's catalog version.
"""

from __future__ import annotations

import logging

import streamlit as st

from pages_support.frame import (
    app_frame, app_password, log_out, logged_in, login_form, quarantine_banner, send_cookie_script,
)
from pages_support.sidebar import render_sidebar
from pruning.app_support.access import open_server_warning

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

st.set_page_config(page_title="Pruning Lab", page_icon=":material/content_cut:", layout="wide")

pages = {
    "Results": [
        st.Page("pages/study.py", title="Allocation study", icon=":material/science:", url_path="study"),
        st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
        st.Page("pages/grid.py", title="Perplexity grid", icon=":material/grid_on:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/report.py", title="Meeting report", icon=":material/summarize:"),
    ],
    "Analysis": [
        st.Page("pages/spectra.py", title="Spectra", icon=":material/show_chart:"),
        st.Page("pages/attention.py", title="Attention", icon=":material/visibility:"),
        st.Page("pages/zeroshot.py", title="Zero-shot", icon=":material/quiz:"),
    ],
    "Experiments": [
        st.Page("pages/launch.py", title="Launch", icon=":material/rocket_launch:"),
        st.Page("pages/jobs.py", title="Jobs", icon=":material/pending_actions:"),
    ],
}
if not logged_in():
    # resolve the address's page (a bookmark of /grid opens the grid after login) but run nothing:
    # the gate sits before every page, also one reached by its URL path, and before the sidebar
    st.navigation(pages, position="hidden")
    login_form()  # ends the script run
navigation = st.navigation(pages)
with app_frame():
    password = app_password()
    if banner := open_server_warning(st.get_option("server.address"), password):
        st.warning(banner, icon=":material/lock_open:")
    if password is not None:
        send_cookie_script()  # after a login: this browser keeps it across reloads (docs/security.md)
        st.sidebar.button("Log out", key="logout", on_click=log_out)
    quarantine_banner()
    render_sidebar()
    navigation.run()
