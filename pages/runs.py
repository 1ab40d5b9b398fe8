"""Runs: every run and reference result set — filter (kind, method, sparsity, status, preset, metric, ε,
protocol, allocation strategy, DLP α, ATP β, text), group, see the config knobs against perplexity, pick
rows into Compare, annotate."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import show_run, stop_with_info, table as table_widget
from pages_support.frame import enter_page
from pages_support.loaders import clear_caches, runs_with_knobs
from pages_support.sidebar import select_runs, selected_model
from pages_support.url import PageAddress
from pruning.app_support.formatting import format_sparsity, unique_run_labels
from pruning.app_support.plain import plain
from pruning.app_support.runs_view import GROUP_BY, RunFilters, filter_runs, group_runs, knobs_figure, preset_text
from pruning.app_support.urlstate import list_field, text_field

# what identifies a run and its result first (perplexity within 1600 px), the knobs of each strategy after
COLUMNS = [
    "run_id", "label", "model", "method", "strategy", "sparsity", "ppl", "seed", "calibration", "zeroshot_mean",
    "preset", "metric", "epsilon", "owl_lambda", "dlp_alpha", "dlp_statistic", "depth_beta", "nm", "ppl_protocol",
    "kind", "status", "tags", "notes", "created_at", "source",
]
# every filter, the grouping and the search live in the address: a copied link opens the same list
URL_FIELDS = [
    list_field("kind", "runs_kinds"), list_field("method", "runs_methods"), list_field("status", "runs_statuses"),
    list_field("sparsity", "runs_sparsities"), list_field("preset", "runs_presets"), list_field("metric", "runs_metrics"),
    list_field("eps", "runs_epsilons"), list_field("protocol", "runs_protocols"), text_field("q", "runs_search"),
    text_field("group", "runs_group"), list_field("strategy", "runs_strategies"), list_field("dlp", "runs_dlp_alphas"),
    list_field("beta", "runs_depth_betas"),
]
NO_GROUP = "(none)"

enter_page()
st.title("Runs and reference results")
if flash := st.session_state.pop("runs_flash", None):
    st.success(plain(flash))
table = runs_with_knobs()
if table.empty:
    stop_with_info("The results store is empty: import the notes (`python -m pruning import-notes`) or launch a run.")

model = selected_model()
scope = table[table["model"] == model] if model else table
address = PageAddress("runs", URL_FIELDS)


def options_of(column: str) -> list:
    values = preset_text(scope) if column == "preset" else scope[column]
    values = values.dropna()
    return sorted(v for v in values.unique() if v != "")


def pick(container, label: str, key: str, options: list, **kwargs) -> list:
    """A multiselect whose value also lives in the address (numbers written with %g)."""
    text_of = {f"{o:g}" if isinstance(o, float) else str(o): o for o in options}
    address.restore(key, list(text_of))
    chosen = container.multiselect(label, list(text_of), key=key, format_func=kwargs.pop("format_func", str), **kwargs)
    return [text_of[c] for c in chosen if c in text_of]


c1, c2, c3, c4, c5 = st.columns([1, 1, 1, 1, 2])
kinds = pick(c1, "Kind", "runs_kinds", ["run", "reference"])
methods = pick(c2, "Method", "runs_methods", options_of("method"))
sparsities = pick(c3, "Sparsity", "runs_sparsities", options_of("sparsity"),
                  format_func=lambda s: format_sparsity(float(s)))
statuses = pick(c4, "Status", "runs_statuses", options_of("status"))
address.restore("runs_search")
text = c5.text_input("Search (run id, label, tag, preset, notes)", placeholder="e.g. QKVout + split", key="runs_search")
d1, d2, d3, d4, d5 = st.columns([2, 1, 1, 2, 1])
presets = pick(d1, "Preset", "runs_presets", options_of("preset"))
metrics = pick(d2, "Metric", "runs_metrics", options_of("metric"))
epsilons = pick(d3, "ε", "runs_epsilons", options_of("epsilon"))
protocols = pick(d4, "Protocol", "runs_protocols", options_of("ppl_protocol"),
                 help="perplexities of different protocols are not comparable; group by protocol or pick one")
address.restore("runs_group", [NO_GROUP, *GROUP_BY])
group = d5.selectbox("Group by", [NO_GROUP, *GROUP_BY], key="runs_group",
                     format_func=lambda g: GROUP_BY.get(g, g))
e1, e2, e3, _ = st.columns([2, 1, 1, 2])
strategies = pick(e1, "Allocation", "runs_strategies", options_of("strategy"),
                  help="uniform, linear (AlphaPruning), owl, dlp (DLP), depth (ATP)")
dlp_alphas = pick(e2, "DLP α", "runs_dlp_alphas", options_of("dlp_alpha"))
depth_betas = pick(e3, "ATP β", "runs_depth_betas", options_of("depth_beta"))
address.write({"runs_kinds": kinds, "runs_methods": st.session_state.get("runs_methods"),
               "runs_statuses": st.session_state.get("runs_statuses"),
               "runs_sparsities": st.session_state.get("runs_sparsities"),
               "runs_presets": st.session_state.get("runs_presets"), "runs_metrics": st.session_state.get("runs_metrics"),
               "runs_epsilons": st.session_state.get("runs_epsilons"),
               "runs_protocols": st.session_state.get("runs_protocols"), "runs_search": text or None,
               "runs_group": None if group == NO_GROUP else group,
               **{k: st.session_state.get(k) for k in ("runs_strategies", "runs_dlp_alphas", "runs_depth_betas")}})

filters = RunFilters(kinds=tuple(kinds), methods=tuple(methods), statuses=tuple(statuses),
                     sparsities=tuple(sparsities), presets=tuple(presets), metrics=tuple(metrics),
                     epsilons=tuple(epsilons), protocols=tuple(protocols), strategies=tuple(strategies),
                     dlp_alphas=tuple(dlp_alphas), depth_betas=tuple(depth_betas), text=text or "")
filtered = filter_runs(scope, filters)
n_budgeted = int(filtered["ppl_budgeted"].fillna(False).astype(bool).sum()) if "ppl_budgeted" in filtered else 0
# a run without a label of its own reads as its config ("wanda · ATP · 70% · smollm2-135m"), not "None"
generated = pd.Series(unique_run_labels(filtered.to_dict("records"), short=True))
own = filtered["label"] if "label" in filtered else pd.Series(None, index=filtered.index, dtype=object)
view = filtered.assign(preset=preset_text(filtered),
                       label=own.where(own.notna() & (own.astype(str) != ""), filtered["run_id"].map(generated)))
view = view[[c for c in COLUMNS if c in view.columns]].reset_index(drop=True)

st.caption(
    f"{len(view)} of {len(table)} rows"
    + (f" · model {plain(model)}" if model else "")
    + (f" · {n_budgeted} budgeted (smoke) run(s): their perplexity covers part of the text only" if n_budgeted else "")
    + " · click rows to select them; sort by clicking a header"
)
if group != NO_GROUP:
    try:
        groups = group_runs(filtered, group)
    except ValueError as exc:
        st.warning(plain(exc))
    else:
        table_widget(groups, "runs_groups", hide_index=True, column_config={
            "best ppl": st.column_config.NumberColumn(format="%.2f"),
            "median ppl": st.column_config.NumberColumn(format="%.2f"),
            "sparsity": st.column_config.NumberColumn(format="percent"),
        })
event = st.dataframe(
    view,
    key="runs_table",
    on_select="rerun",
    selection_mode="multi-row",
    hide_index=True,
    height=420,
    column_config={
        "run_id": st.column_config.TextColumn("run id", width="medium", pinned=True),
        "label": st.column_config.TextColumn("label", width="medium",
                                             help="the run's own label, else its config in words"),
        "seed": st.column_config.NumberColumn("seed", format="%d", width="small", help="calibration seed"),
        "calibration": st.column_config.TextColumn("calibration", width="medium",
                                                   help="calibration text · windows × tokens"),
        "kind": st.column_config.TextColumn("kind", width="small"),
        "method": st.column_config.TextColumn("method", width="small"),
        "preset": st.column_config.TextColumn("preset", width="medium",
                                              help="as the notes wrote it (e.g. QKVout + split)"),
        "metric": st.column_config.TextColumn("metric", width="small"),
        "nm": st.column_config.TextColumn("N:M", width="small"),
        "ppl": st.column_config.NumberColumn("perplexity", format="%.2f", width="small"),
        "ppl_protocol": st.column_config.TextColumn(
            "protocol", help="how the perplexity was measured; values of different protocols "
            "are not comparable (budgeted = a smoke run's window budget)"),
        "zeroshot_mean": st.column_config.NumberColumn("zero-shot mean", format="%.4f", width="small"),
        "epsilon": st.column_config.NumberColumn("ε", format="%g", width="small"),
        "strategy": st.column_config.TextColumn("allocation", width="small"),
        "owl_lambda": st.column_config.NumberColumn("OWL λ", format="%g", width="small"),
        "dlp_alpha": st.column_config.NumberColumn("DLP α", format="%g", width="small"),
        "dlp_statistic": st.column_config.TextColumn("DLP statistic", width="small"),
        "depth_beta": st.column_config.NumberColumn("ATP β", format="%g", width="small"),
        "sparsity": st.column_config.NumberColumn("sparsity", format="percent", width="small"),
        "status": st.column_config.TextColumn("status", width="small"),
        "tags": st.column_config.ListColumn("tags"),
    },
)
with st.expander("Config knobs against perplexity", expanded=False):
    knobs = knobs_figure(filtered)
    if knobs is None:
        st.caption("Needs at least two of the team's runs with a perplexity, all of one protocol: "
                   "filter a protocol (and a model in the sidebar).")
    else:
        st.caption("One line per run: allocation, metric, preset, sparsity, ε, DLP α and ATP β against "
                   "perplexity (log); drag along an axis to keep a range.")
        st.plotly_chart(knobs, key="runs_knobs")
picked = view.iloc[event.selection.rows]["run_id"].tolist() if event and event.selection.rows else []
st.session_state["picked_runs"] = picked
if not picked:
    stop_with_info("Select rows to compare them, see their details or edit their notes and tags.")

if st.button(f"Compare {len(picked)} selected run(s)", type="primary", disabled=len(picked) < 1):
    select_runs(picked)
    st.switch_page("pages/compare.py")

focus = st.selectbox("Run", picked, key="runs_focus")
show_run(focus)
with st.form("annotate", clear_on_submit=True):
    st.markdown("**Notes and tags**")
    note = st.text_area("Add a note", placeholder="What did we learn from this run?")
    tags = st.text_input("Tags (comma separated)", placeholder="baseline, to-rerun")
    remove = st.checkbox("Remove these tags instead of adding them")
    saved = st.form_submit_button("Save")
if saved:
    from pruning.store.annotations import add_note, set_tags
    from pruning.store.errors import StoreError

    try:
        if note.strip():
            add_note(focus, note)
        if tags.strip():
            set_tags(focus, tags.split(","), remove=remove)
    except StoreError as exc:
        st.error(plain(exc))
    else:
        clear_caches()
        st.session_state["runs_flash"] = f"Saved the annotation of {focus}."
        st.rerun()
