"""The app closed by default (issue 19): bind address, the password gate on every page, allowed
roots for every path the launch form accepts (``text:PATH`` too), one resolution of relative paths
for app and worker, user text shown as plain text, and the sweep size cap."""

from __future__ import annotations

import os
import re
import time
import tomllib
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pruning.app_support.access import (
    configured_password,
    is_loopback,
    open_server_warning,
    password_matches,
    session_is_open,
    session_token,
)

REPO = Path(__file__).resolve().parents[1]
APP = str(REPO / "app.py")
RUNS_TITLE = "Runs and reference results"


# ---- bind address ---------------------------------------------------------------------------------------
def test_app_binds_to_loopback_by_default():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert is_loopback(config["server"]["address"])


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("", False), (None, False), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("lab.example", False)],
)
def test_loopback_addresses(address, loopback):
    assert is_loopback(address) is loopback


def test_open_server_banner_only_without_password_off_loopback():
    assert open_server_warning("127.0.0.1", None) is None
    assert open_server_warning("0.0.0.0", "pw") is None
    text = open_server_warning("0.0.0.0", None)
    assert text and "'0.0.0.0'" in text and "PRUNING_LAB_PASSWORD" in text
    assert "every network interface" in open_server_warning("", None)


# ---- the password and the session token -------------------------------------------------------------------
def test_password_from_environment_then_secrets():
    assert configured_password({}, None) is None
    assert configured_password({"PRUNING_LAB_PASSWORD": "  "}, {}) is None  # blank = not set
    assert configured_password({}, {"password": "from-secrets"}) == "from-secrets"
    assert configured_password({"PRUNING_LAB_PASSWORD": "env"}, {"password": "from-secrets"}) == "env"
    assert configured_password({}, {"password": 1234}) is None  # not a string: not a password


def test_password_match_and_session_token():
    assert password_matches("s3cret", "s3cret")
    assert not password_matches("s3cret ", "s3cret") and not password_matches("", "s3cret")
    assert not password_matches(None, "s3cret")
    token = session_token("s3cret")
    assert "s3cret" not in token
    assert session_is_open(token, "s3cret") and session_is_open(None, None)
    assert not session_is_open(None, "s3cret") and not session_is_open(token, "changed")


# ---- the gate in the app (AppTest) -------------------------------------------------------------------------
@pytest.fixture()
def notes_store(data_dir: Path) -> Path:
    from test_app_pages import fill_with_notes

    fill_with_notes(data_dir)
    return data_dir


def _texts(at: AppTest) -> list[str]:
    """Every text value the run produced (titles, markdown, captions, alerts)."""
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    return out


def _assert_locked(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Pruning Lab"]
    assert not at.dataframe and not at.sidebar.children  # no table, no run picker
    assert not any(RUNS_TITLE in t or "reference sets in the store" in t for t in _texts(at))
    assert at.text_input(key="login_password").label == "Password"  # the form is all there is


def test_password_gates_every_page(notes_store, monkeypatch):
    monkeypatch.setenv("PRUNING_LAB_PASSWORD", "s3cret")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()  # app.py: only the form
    _assert_locked(at)
    # AppTest runs the page file itself from now on (Streamlit's legacy pages/ mode, which is also
    # what a bookmark of a page does as the first request of a fresh server): gated as well
    at.run()
    _assert_locked(at)
    at.text_input(key="login_password").input("wrong")
    at.button(key="login_submit").click().run()
    _assert_locked(at)
    assert [e.value for e in at.error] == ["Wrong password."]
    at.switch_page("pages/jobs.py").run()  # another page by its path: still the form
    _assert_locked(at)
    at.text_input(key="login_password").input("s3cret")
    at.button(key="login_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [t.value for t in at.title] == ["Jobs"]
    at.switch_page("pages/runs.py").run()
    assert [t.value for t in at.title] == [RUNS_TITLE] and at.dataframe
    assert not at.error


def test_no_password_no_form(notes_store, monkeypatch):
    monkeypatch.delenv("PRUNING_LAB_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert [t.value for t in at.title] == [RUNS_TITLE] and at.dataframe
    assert not at.warning  # bound to 127.0.0.1 by .streamlit/config.toml: no banner


def test_banner_when_open_to_the_network(notes_store, monkeypatch):
    import streamlit

    real = streamlit.get_option
    monkeypatch.setattr(streamlit, "get_option", lambda name: "0.0.0.0" if name == "server.address" else real(name))
    monkeypatch.delenv("PRUNING_LAB_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("without a password" in w.value for w in at.warning)
    assert [t.value for t in at.title] == [RUNS_TITLE]


def test_password_from_secrets(notes_store, monkeypatch):
    monkeypatch.delenv("PRUNING_LAB_PASSWORD", raising=False)
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["password"] = "from-secrets"
    at.run()
    _assert_locked(at)


# ---- allowed roots for every path of the launch form ---------------------------------------------------------
def _form(**over) -> dict:
    values = {"model.name": "smollm2-135m", "pruning.method": "magnitude", "allocation.strategy": "uniform",
              "calibration.dataset": "wiki", "evaluation.perplexity": ["wiki"]}
    return {**values, **over}


@pytest.mark.parametrize("field, value", [
    ("calibration.dataset", "text:/etc/passwd"),
    ("calibration.dataset", "text:../../../../../../etc/passwd"),  # relative: from the repository root
    ("evaluation.perplexity", ["wiki", "text:/etc/passwd"]),
])
def test_text_datasets_outside_the_roots_are_refused(tmp_path, field, value):
    from pruning.app_support.launch import build_run_config, validate_form
    from pruning.errors import ConfigError

    config, errors = validate_form(_form(**{field: value}), roots=[tmp_path])
    assert config is None and list(errors) == [field], errors
    assert "text:" in errors[field] and "/etc/passwd" in errors[field] and "outside the allowed roots" in errors[field]
    with pytest.raises(ConfigError, match=f"^{field}: .*outside the allowed roots"):
        build_run_config(_form(**{field: value}), roots=[tmp_path])


def test_text_dataset_under_a_root_and_named_corpora_are_accepted(tmp_path):
    from pruning.app_support.launch import validate_form

    (tmp_path / "calib.txt").write_text("some text\n")
    (tmp_path / "link.txt").symlink_to("/etc/passwd")
    ok = _form(**{"calibration.dataset": f"text:{tmp_path / 'calib.txt'}", "evaluation.perplexity": ["wiki", "lee"]})
    config, errors = validate_form(ok, roots=[tmp_path])
    assert errors == {} and config.calibration.dataset == f"text:{tmp_path / 'calib.txt'}"
    _, errors = validate_form(_form(**{"calibration.dataset": f"text:{tmp_path / 'link.txt'}"}), roots=[tmp_path])
    assert list(errors) == ["calibration.dataset"]  # a link out of the root is followed, then refused


def test_default_roots_refuse_etc_passwd(monkeypatch):
    from pruning.app_support.launch import validate_form

    monkeypatch.delenv("PRUNING_LAB_MODEL_ROOTS", raising=False)
    _, errors = validate_form(_form(**{"calibration.dataset": "text:/etc/passwd"}))
    assert list(errors) == ["calibration.dataset"]
    config, errors = validate_form(_form(**{"calibration.dataset": "text:README.md"}))  # in the repository
    assert errors == {} and config is not None


def test_launch_page_refuses_text_outside_the_roots(notes_store):
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["launch.calibration.dataset"] = "text:/etc/passwd"  # typed into the select (a new option)
    at.run()
    at.switch_page("pages/launch.py").run()
    assert at.selectbox(key="launch.calibration.dataset").value == "text:/etc/passwd"
    at.button(key="launch.submit").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith("calibration.dataset") and "outside the allowed roots" in errors[0]
    from pruning.jobs import list_jobs

    assert list_jobs(refresh=False) == []


def test_relative_paths_resolve_the_same_in_app_and_worker(tmp_path, monkeypatch):
    """The form checks a relative path against the repository root, and the worker (and the CLI,
    from any working directory) opens that same file."""
    from pruning.app_support.launch import check_model_reference, looks_like_local_path
    from pruning.text.data import load_text
    from pruning.errors import ConfigError
    from pruning.model.load import resolve_model
    from pruning.roots import resolve_local_path

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the repository: a cwd-relative reading would differ
    (elsewhere / "README.md").write_text("not the repository's README")
    assert resolve_local_path("README.md") == REPO / "README.md"
    assert load_text("text:README.md") == (REPO / "README.md").read_text(encoding="utf-8")
    # a model directory named relative to the repository root ("../../tmp/.../models/m")
    model_dir = tmp_path / "models" / "m"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text("{}")
    rel = os.path.relpath(model_dir, REPO)
    assert not Path(rel).is_absolute() and looks_like_local_path(rel)
    check_model_reference(rel, [tmp_path / "models"])  # read from cwd it would lie outside this root
    with pytest.raises(ConfigError, match="outside the allowed model roots"):
        check_model_reference(rel, [elsewhere])
    assert resolve_model(rel).location == str(model_dir.resolve())


# ---- user text shown as plain text ---------------------------------------------------------------------------
HOSTILE = [
    "![x](http://evil/x.png)",
    "<img src=x onerror=alert(1)>",
    "**bold** _it_ ~~gone~~ `code`",
    "[link](javascript:alert(1))",
    "<https://evil.example/a>",
    "# heading",
    "1. first",
    "- item",
    "> quoted",
    "| a | b |\n|---|---|\n| 1 | 2 |",
    "$x^2$ :red[alarm] :material/warning:",
    "a\\*b\\* &amp; &lt;",
    "visit www.evil.example or mail me@evil.example or http://evil.example/x",
    "line one\n\n    indented code\n## two",
    "[ref]: http://evil/x.png\n![ref]",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_plain_renders_as_its_own_characters(text):
    import html

    from markdown_it import MarkdownIt

    from pruning.app_support.plain import ZWSP, plain

    out = MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(plain(text)).strip()
    assert out.startswith("<p>") and out.endswith("</p>") and out.count("<p>") == 1, out  # one paragraph
    body = out[3:-4]
    assert "<" not in body  # no tag at all: no <img>, <a>, <strong>, <code>, <h1>, <li>, <table>
    shown = html.unescape(body)  # the text a reader sees (zero-width spaces are invisible)
    assert shown.replace(ZWSP, "") in (" ".join(text.split()), _folded(text))
    escaped = plain(text)
    assert "![" not in escaped and "](" not in escaped and "<img" not in escaped
    # no GFM autolink literal is formed: remark-gfm (Streamlit's renderer) looks for them in the text
    # after the escapes are resolved (mdast-util-gfm-autolink-literal's patterns), not in the source
    assert not GFM_AUTOLINK.search(shown), shown


#: mdast-util-gfm-autolink-literal's text patterns: a URL after a scheme or www., and an e-mail address
GFM_AUTOLINK = re.compile(r"(https?://|www(?=\.))[-.\w]+|[-.\w+]+@[-\w]+(?:\.[-\w]+)+", re.IGNORECASE)


def _folded(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


def test_plain_keeps_ordinary_text_readable():
    from pruning.app_support.plain import plain

    assert plain("pruning.sparsity: 1.2 is invalid").startswith("pruning.sparsity")
    assert plain("smollm2-135m · wanda · 70% · ε 0.2") == "smollm2-135m · wanda · 70% · ε 0.2"
    assert plain(None) == "" and plain(3.5) == "3.5"


MARKDOWN_IMAGE = re.compile(r"(?<!\\)!(?<!\\)\[[^\]]*(?<!\\)\]\(|<img", re.IGNORECASE)  # ![…]( unescaped


def _markdown_values(at: AppTest) -> list[str]:
    """Every string a run sent to a Markdown-rendering element (and widget labels)."""
    values = _texts(at)
    for kind in ("expander", "tabs", "status"):
        values += [str(getattr(e, "label", "")) for e in getattr(at, kind, [])]
    for kind in ("radio", "selectbox", "multiselect", "text_input", "button", "checkbox", "number_input"):
        values += [str(w.label) for w in getattr(at, kind)]
    values += [str(w.label) + " ".join(map(str, w.options)) for w in at.radio]
    values += [str(p.proto.text) for p in at.get("progress")]
    return values


def test_hostile_label_and_model_render_as_text(notes_store):
    """A run whose model name and label carry a Markdown image and raw HTML, and a queued job with
    that label: no page sends an unescaped image or <img to a Markdown element."""
    from test_app_pages import publish_synthetic_run

    from pruning.config.run_config import RunConfig
    from pruning.jobs import get_backend

    evil = "![x](http://evil/x.png) <img src=http://evil/y.png> **bold**"
    run_id = publish_synthetic_run(label=evil)
    config = RunConfig.from_dict({"model": {"name": "smollm2-135m"}, "label": evil})
    get_backend("local").submit(config)  # the Jobs page shows the job's label
    pages = {"runs": {"runs_table": {"selection": {"rows": [0], "columns": [], "cells": []}}},
             "jobs": {}, "compare": {}, "grid": {}}
    for page, state in pages.items():
        at = AppTest.from_file(APP, default_timeout=60)
        at.session_state["sb_runs"] = [run_id]
        for key, value in state.items():
            at.session_state[key] = value
        at.run()
        if page != "runs":
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        values = _markdown_values(at)
        shown = [v for v in values if "evil" in v]
        if page == "jobs":
            assert shown, f"the job's label is not on the {page} page"
        bad = [v for v in values if MARKDOWN_IMAGE.search(v)]
        assert not bad, (page, bad)


# ---- sweep size cap ------------------------------------------------------------------------------------------
def test_sweep_size_is_counted_without_expanding():
    from pruning.jobs.sweep import sweep_size

    spec = {"methods": ["magnitude", "wanda"], "epsilons": [0.1, 0.2, 0.3],
            "variants": [{"allocation.strategy": "uniform"}, {"allocation.strategy": "linear"}],
            "include": [{"pruning.sparsity": 0.5}]}
    assert sweep_size(spec) == 2 * 3 * 2 + 1
    assert sweep_size({"epsilons": [i / 1000 for i in range(300)], "sparsities": [i / 1000 for i in range(300)]}) == 90_000


def test_sweep_over_the_cap_is_refused_at_once():
    import time

    from pruning.errors import ConfigError
    from pruning.jobs.sweep import MAX_SWEEP_RUNS, plan_sweep

    huge = {"epsilons": [i / 1000 for i in range(300)], "sparsities": [i / 1000 for i in range(300)]}
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=f"90,000 combinations .* cap of {MAX_SWEEP_RUNS}"):
        plan_sweep(huge, check_done=False)
    assert time.perf_counter() - start < 1.0  # refused before expanding (planning 90,000 takes minutes)
    at_cap = {"epsilons": [round(0.01 * i, 2) for i in range(1, 33)], "sparsities": [0.1 * i for i in range(1, 9)],
              "methods": ["magnitude", "wanda"]}
    assert 32 * 8 * 2 == MAX_SWEEP_RUNS
    assert plan_sweep(at_cap, check_done=False).n_combinations == MAX_SWEEP_RUNS  # the cap itself is allowed


def test_launch_form_shows_the_count_and_refuses_over_the_cap(notes_store, monkeypatch):
    monkeypatch.setattr("pruning.jobs.ensure_local_worker", lambda *a, **k: None)
    called = []
    monkeypatch.setattr("pruning.jobs.sweep.plan_sweep", lambda *a, **k: called.append(1))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/launch.py").run()
    at.multiselect(key="sweep.methods").set_value(["magnitude", "wanda", "sparsegpt"])
    at.text_input(key="sweep.eps").set_value(", ".join(f"{0.001 * i:.3f}" for i in range(1, 101)))
    at.text_input(key="sweep.sparsity").set_value("0.5, 0.6")
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("600 combinations" in e and "cap of 512" in e for e in errors), errors
    assert not called  # never planned
    assert not [b for b in at.button if b.key == "sweep.submit"]  # nothing to submit
    at.text_input(key="sweep.eps").set_value("0.1, 0.2").run()  # 3 x 2 x 2 = 12: counted, then planned
    assert any("12 combination(s)" in c.value for c in at.caption) and called


def test_pages_dir_holds_only_pages_that_enter_the_gate_first():
    """Streamlit serves every file of pages/ by its URL path before app.py's st.navigation takes over
    (a fresh server's first request): a helper module there ran before login (issue 27, item 7:
    /loaders, /frame, /sidebar). Only pages live there, and each one's first statement after its
    imports is enter_page(), which reruns into app.py and its password gate."""
    import ast

    root = Path(__file__).resolve().parents[1] / "pages"
    files = sorted(root.glob("*.py"))
    assert len(files) >= 9 and not [p.name for p in files if p.name.startswith("_")]
    for path in files:
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and \
                    getattr(node.value.func, "id", None) == "enter_page":
                break
            if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef)):
                continue  # a definition runs nothing
            # before the gate: nothing that draws (a call of st.*) or reads the store (a loader)
            for call in (n for n in ast.walk(node) if isinstance(n, ast.Call)):
                func = call.func
                draws = isinstance(func, ast.Attribute) and getattr(func.value, "id", None) == "st"
                reads = isinstance(func, ast.Name) and func.id.startswith(("load", "runs", "all_runs", "show", "render"))
                assert not (draws or reads), f"{path.name}: {ast.get_source_segment(source, call)[:80]}"
        else:
            raise AssertionError(f"{path.name} never calls enter_page() at module level")


def test_login_limiter_is_global_locks_out_and_logs_without_the_password(caplog):
    """Issue 27, item 7: the 1 s delay was per session (5 parallel sessions each answered in ~1.1 s),
    with no lockout and no log. Now wrong passwords queue behind one process-wide lock, a burst of
    failures locks every login out for a while (the right password too), and each failure is logged."""
    import logging
    import threading

    from pruning.app_support.access import LoginLimiter

    now = [0.0]
    slept = []
    limiter = LoginLimiter(delay_s=1.0, max_failures=3, window_s=60.0, lockout_s=300.0, clock=lambda: now[0],
                           sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    with caplog.at_level(logging.WARNING, logger="pruning.app_support.access"):
        assert limiter.attempt("guess-1", "s3cret", source="10.0.0.9") == (False, "Wrong password.")
        assert limiter.attempt("s3cret", "s3cret") == (True, None)
        assert limiter.attempt("guess-2", "s3cret")[0] is False
        ok, message = limiter.attempt("guess-3", "s3cret")          # the third failure in the window
        assert not ok and 298.0 <= limiter.locked_for() <= 300.0
        ok, message = limiter.attempt("s3cret", "s3cret")           # locked: even the right password
        assert not ok and re.search(r"Too many failed logins: try again in 29\d s", message), message
        now[0] += 301.0
        assert limiter.attempt("s3cret", "s3cret") == (True, None)  # the lockout is over
    assert slept == [1.0, 1.0, 1.0]
    logged = caplog.text
    assert "failed login (source 10.0.0.9" in logged and "logins locked" in logged
    assert "guess" not in logged and "s3cret" not in logged

    # parallel sessions: real clock, 5 wrong passwords at once take ~5 delays in all, not ~1
    real = LoginLimiter(delay_s=0.2, max_failures=100)
    threads = [threading.Thread(target=real.attempt, args=("nope", "s3cret")) for _ in range(5)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.perf_counter() - start >= 5 * 0.2 * 0.95
