"""Jobs: live list of queued/running/finished jobs with progress, stage message, log tail and
cancel / retry buttons (refreshed every 2 s by a fragment)."""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3

import streamlit as st

from pages_support.frame import enter_page
from pages_support.loaders import clear_caches, runs
from pruning.app_support.eta import eta_seconds, format_duration, history_totals
from pruning.app_support.formatting import format_ppl
from pruning.app_support.plain import plain

log = logging.getLogger(__name__)
LOG_TAIL_CHARS = 4000
SHOWN_JOBS = 30
STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/autorenew:",
    "succeeded": ":material/check_circle:",
    "failed": ":material/error:",
    "cancelled": ":material/cancel:",
}


def _when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M:%S") if t else "—"


def _act(action, job_id: str) -> None:
    from pruning.jobs import JobError

    try:
        action(job_id)
    except JobError as exc:
        st.session_state["jobs_message"] = f"{job_id}: {exc}"


@st.fragment(run_every=2)
def job_list(states: list[str]) -> None:
    """The jobs table; reruns on its own every 2 s."""
    from pruning.jobs import JobError, cancel_job, job_logs, job_progress, list_jobs, retry_job

    try:  # reap jobs of lost workers, refresh Ray jobs from their cluster (writes the queue)
        jobs = list_jobs(states=tuple(states) or None, limit=200)
    except (OSError, sqlite3.Error) as exc:  # a read-only data directory: show the queue as it is, write nothing
        log.info("job list without refresh: %s", exc)
        jobs = list_jobs(states=tuple(states) or None, limit=200, refresh=False)
    if any(j.state == "succeeded" and (j.finished_at or 0) > st.session_state.get("jobs_seen", 0) for j in jobs):
        st.session_state["jobs_seen"] = max(j.finished_at or 0 for j in jobs)
        clear_caches()  # new results: the other pages re-read the store
    if msg := st.session_state.pop("jobs_message", None):
        st.warning(plain(msg))
    counts = {s: sum(j.state == s for j in jobs) for s in STATE_ICONS}
    st.caption(
        " · ".join(f"{STATE_ICONS[s]} {s} {n}" for s, n in counts.items())
        + f" · updated {_when(dt.datetime.now().timestamp())}"
    )
    if not jobs:
        st.info("No jobs yet. Launch one from the Launch page.")
        return
    from pruning.store import run_sql

    finished = runs().set_index("run_id")
    try:  # the timings of earlier runs, for the estimates of running jobs
        history = run_sql("SELECT model, method, status, timings_json FROM runs WHERE kind = 'run'").to_dict("records")
    except Exception as exc:  # noqa: BLE001 - an estimate is optional; the list must still render
        log.info("no run history for estimates: %s", exc)
        history = []
    for job in jobs[:SHOWN_JOBS]:
        with st.container(border=True):
            c1, c2, c3 = st.columns([4, 4, 1])
            c1.markdown(
                f"{STATE_ICONS.get(job.state, '')} **{job.state}** · `{job.job_id}` · {job.backend}  \n"
                f"run `{job.run_id}` · {plain(job.label or job.config.get('model', {}).get('name', ''))}"
            )
            try:
                progress = job_progress(job.job_id) if not job.done else job.progress
                log_tail = job_logs(job.job_id, tail_chars=LOG_TAIL_CHARS)
            except JobError as exc:  # e.g. a Ray cluster that is not reachable right now
                progress, log_tail = job.progress, f"(not available: {exc})"
            fraction = 1.0 if job.state == "succeeded" else progress.fraction
            c2.progress(
                min(max(fraction, 0.0), 1.0),
                text=plain(f"{progress.stage or job.state}: {progress.message or ''}"[:120]),
            )
            now = dt.datetime.now().timestamp()
            elapsed = ((job.finished_at or now) - job.started_at) if job.started_at else None
            timing = f"created {_when(job.created_at)} · started {_when(job.started_at)}"
            if job.done:
                timing += f" · finished {_when(job.finished_at)} · took {format_duration(elapsed)}"
            elif elapsed is not None:
                model, method = job.config.get("model", {}).get("name"), job.config.get("pruning", {}).get("method")
                eta, how = eta_seconds(elapsed, fraction, history_totals(history, model, method))
                timing += f" · running {format_duration(elapsed)} · about {format_duration(eta)} to go ({how})"
            c2.caption(timing)
            if job.state == "succeeded" and job.run_id in finished.index:
                row = finished.loc[job.run_id]
                dataset, _, protocol = str(row["ppl_protocol"] or "").partition(" ")
                ppl = f"{dataset} perplexity {format_ppl(row['ppl'])} ({protocol})" if row["ppl"] == row["ppl"] else ""
                zs = f"zero-shot {row['zeroshot_mean']:.3f}" if row["zeroshot_mean"] == row["zeroshot_mean"] else ""
                result = plain("result: " + " · ".join(p for p in (ppl, zs) if p))
                c1.caption(result)
                c1.page_link("pages/runs.py", label="Open the run", icon=":material/open_in_new:",
                             query_params={"q": job.run_id, "runs": job.run_id})  # found and picked in the sidebar
            if not job.done:
                c3.button("Cancel", key=f"cancel-{job.job_id}", on_click=_act, args=(cancel_job, job.job_id))
            elif job.state in ("failed", "cancelled"):
                c3.button("Retry", key=f"retry-{job.job_id}", on_click=_act, args=(retry_job, job.job_id))
            if job.reason:
                st.error(plain(job.reason[:1000]))
            with st.expander("log tail"):
                st.code(log_tail or "(no output yet)", language=None)


enter_page()
st.title("Jobs")
c1, c2 = st.columns([3, 1])
states = c1.multiselect("Show", list(STATE_ICONS), default=[], placeholder="all states", key="jobs_states")
if c2.button("Start local worker", help="Starts `python -m pruning worker` unless one is alive"):
    from pruning.jobs import ensure_local_worker

    pid = ensure_local_worker()
    st.toast(f"started worker pid {pid}" if pid else "a worker is already running")
job_list(states)
