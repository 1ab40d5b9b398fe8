"""Launch: one run from a form built on the validated RunConfig, or a sweep over a grid.
Errors are shown inline under the field they name; nothing is submitted on invalid input, and a
double click does not submit twice (the submitted token is kept in session_state)."""

from __future__ import annotations

import logging

import streamlit as st

from pages_support.common import stop_with_info
from pages_support.frame import enter_page
from pruning.app_support.launch import (
    FORM_FIELDS,
    FORM_SECTIONS,
    allowed_model_roots,
    form_field,
    grid_size,
    method_choices,
    parse_value_list,
    shown_fields,
    submission_token,
    sweep_spec,
    validate_form,
)
from pruning.app_support.plain import plain
from pruning.errors import ConfigError, PruningLabError
from pruning.config.presets import preset_names
from pruning.jobs.sweep import MAX_SWEEP_RUNS, plan_sweep

log = logging.getLogger(__name__)
WIDGETS = {
    "text": st.text_input,
    "select": st.selectbox,
    "float": st.number_input,
    "int": st.number_input,
    "multi": st.multiselect,
    "check": st.checkbox,
}


def key(field: str) -> str:
    """Session-state key of a form field's widget."""
    return "launch." + field


def form_values() -> dict:
    """The form's current values as dotted RunConfig keys."""
    values = {f: st.session_state.get(key(f)) for f in FORM_FIELDS if key(f) in st.session_state}
    if values.get("evaluation.limit_windows") == 0:
        values["evaluation.limit_windows"] = None
    return values


def submit(configs: list, backend: str) -> None:
    """Queue configs on ``backend`` once per token; start a local worker for local jobs."""
    from pruning.jobs import ensure_local_worker, get_backend

    token = submission_token(configs, backend)
    if st.session_state.get("launch_token") == token:
        st.warning("Already submitted (double click?) — see the Jobs page.")
        return
    st.session_state["launch_token"] = token
    try:
        answers = [get_backend(backend).submit(c) for c in configs]
        if backend == "local":
            ensure_local_worker()
    except PruningLabError as exc:
        st.session_state.pop("launch_token", None)
        st.error(f"backend: {plain(exc)}")
        return
    new = [a.job.job_id for a in answers if a.job is not None and not a.deduped]
    st.session_state["launch_result"] = (
        f"Submitted {len(new)} job(s): {', '.join(new) or '—'}; {len(answers) - len(new)} already done or running."
    )
    log.info("submitted %d job(s) on %s: %s", len(new), backend, new)


enter_page()
st.title("Launch runs")
backend = st.radio(
    "Backend",
    ["local", "ray"],
    horizontal=True,
    key="launch.backend",
    help="local: a worker process on this machine; ray: the team's Ray cluster",
)
# outside the form: choosing a strategy reruns the page, so the form shows that strategy's knobs
STRATEGY = "allocation.strategy"
kind, label, options = form_field(STRATEGY)
strategy = WIDGETS[kind](label, key=key(STRATEGY), **options)
pressed = st.session_state.get("launch.submit", False)
config, errors = validate_form(form_values()) if pressed else (None, {})

with st.form("launch_form"):
    for title in FORM_SECTIONS:
        fields = [f for f in shown_fields(title, strategy) if f != STRATEGY]
        st.markdown(f"**{title}**")
        cols = st.columns(len(fields))
        for col, field in zip(cols, fields):
            kind, label, options = form_field(field, st.session_state.get(key(field)))
            with col:
                WIDGETS[kind](label, key=key(field), **options)
                if field in errors:
                    st.error(plain(errors.pop(field)))  # messages quote what was typed
    for field, message in errors.items():  # a field without its own widget
        st.error(plain(message))
    st.form_submit_button("Launch run", type="primary", key="launch.submit")
st.caption(
    "Model: an offline alias (smollm2-135m, gemma3-270m), a hub id, or a local path; texts: a corpus name or "
    "text:PATH. Paths (relative ones from the repository root) must lie under the allowed roots: "
    f"{plain(', '.join(str(r) for r in allowed_model_roots()))}."
)
if pressed and config is not None:
    submit([config], backend)
if "launch_result" in st.session_state:
    st.success(st.session_state["launch_result"])
    st.page_link("pages/jobs.py", label="Watch it on the Jobs page", icon=":material/pending_actions:")

st.header("Sweep")
st.caption("Every combination of the lists below, on top of the form's values.")
c1, c2 = st.columns(2)
axes = {
    "pruning.method": c1.multiselect("Methods", method_choices(), key="sweep.methods"),
    "allocation.preset": c2.multiselect(
        "Presets", ["", *preset_names()], key="sweep.presets", format_func=lambda p: p or "(no preset)"
    ),
}
c3, c4 = st.columns(2)
try:
    axes["allocation.epsilon"] = parse_value_list(
        c3.text_input("ε values", key="sweep.eps", placeholder="0.1, 0.2, 0.3"), "allocation.epsilon"
    )
    axes["pruning.sparsity"] = parse_value_list(
        c4.text_input("Sparsities", key="sweep.sparsity", placeholder="0.5, 0.7"), "pruning.sparsity"
    )
except ConfigError as exc:
    stop_with_info(f"Sweep not ready: {plain(exc)}")
if not any(axes.values()):
    stop_with_info("Add values to at least one list to build a sweep.")
n_combinations = grid_size(axes)  # from the list lengths, before anything is expanded
if n_combinations > MAX_SWEEP_RUNS:
    st.error(f"This grid has {n_combinations:,} combinations, more than the cap of {MAX_SWEEP_RUNS:,} per sweep: "
             "shorten the lists or split the sweep.")
    st.stop()
st.caption(f"{n_combinations} combination(s) of the lists (at most {MAX_SWEEP_RUNS} per sweep)")
base, base_errors = validate_form(form_values())
if base is None:
    stop_with_info("Fix the form above first: " + plain("; ".join(base_errors.values())))
plan = plan_sweep(sweep_spec(base, axes))
st.metric(
    "Jobs this grid makes", len(plan.to_run), help=f"{grid_size(axes)} combinations -> {len(plan.configs)} unique runs"
)
st.caption(
    f"{plan.n_combinations} combinations, {len(plan.configs)} unique, {len(plan.invalid)} invalid, "
    f"{len(plan.done)} already done, {len(plan.active)} queued/running"
)
for bad in plan.invalid:
    st.error(plain(bad.error))
if st.button(f"Submit {len(plan.to_run)} job(s)", disabled=bool(plan.invalid) or not plan.to_run, key="sweep.submit"):
    submit(plan.to_run, backend)
    st.rerun()
