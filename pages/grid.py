"""Perplexity grid: the notes' tables as they should have looked — method x layer-group preset
for one model and sparsity, the baseline pinned first (GT, else uniform beside the dense model),
each cell's delta to it in %, a presentation mode for the projector and an image export."""

from __future__ import annotations

import streamlit as st

from pages_support.common import show_run, stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import catalog_version, load_perplexity_cells
from pages_support.sidebar import select_runs, selected_model
from pages_support.url import PageAddress
from pruning.app_support.formatting import format_ppl, format_sparsity
from pruning.app_support.grid import (
    CELL_STAT_LABELS,
    CELL_STATS,
    OWN_RUN_MARK,
    build_grid,
    cell_legend,
    cell_options,
    dense_perplexity,
    epsilon_options,
    filter_cells,
    grid_cells,
    multi_value_cells,
    protocol_options,
)
from pruning.app_support.grid_plots import epsilon_curve, grid_heatmap, presentation_legend
from pruning.app_support.plain import plain
from pruning.app_support.urlstate import cell_field, flag_field, number_field, text_field
from pruning.calibration.protocol import by_calibration, calibration_options

# the view lives in the address (?model=…&sparsity=0.7&dataset=wiki&eps=0.2&cellstat=lowest&cell=Wanda/all&present=1):
# a copied link opens the same table, cell and mode
URL_FIELDS = [
    text_field("model", "grid_model"), number_field("sparsity", "grid_sparsity"), text_field("dataset", "grid_dataset"),
    text_field("source", "grid_source"), text_field("calibration", "grid_calibration"),
    text_field("protocol", "grid_protocol"), number_field("eps", "grid_epsilon"),
    text_field("cellstat", "grid_cellstat"),
    cell_field("cell", "grid_cell"), flag_field("present", "grid_present"), text_field("colour", "grid_colour"),
]
ALL_EPSILON = "all"  # the ε box's "best of all"
COLOUR_LABELS = {"delta": "Δ % to baseline", "ppl": "perplexity"}
IMAGE_FORMATS = ("png", "svg")

enter_page()
address = PageAddress("grid", URL_FIELDS)
from_url = address.restore
from_url("grid_present", [True, False])
presenting = bool(st.session_state.get("grid_present"))
if not presenting:  # presentation mode: the grid first, at the top of a 1280 x 720 screen
    st.title("Perplexity grid")
    st.page_link("pages/study.py", label="The allocation study family by family, with its verdicts: Allocation study",
                 icon=":material/science:")
cells = grid_cells(load_perplexity_cells(catalog_version()))  # never a block probe's value or option
if cells.empty:
    stop_with_info("No perplexity results in the store yet.")
chart_slot = st.container()  # presentation mode draws the grid here, above the view's settings
settings = (st.expander("View settings: model, sparsity, dataset, calibration, protocol, ε, presentation mode")
            if presenting else st.container())

models = sorted(cells["model"].dropna().unique())
from_url("grid_model", models)
if st.session_state.get("grid_model") not in models:  # the sidebar's model, else the fullest table
    wanted = selected_model()
    st.session_state["grid_model"] = wanted if wanted in models else cells["model"].value_counts().idxmax()
with settings:
    c1, c2, c3, c5, c4 = st.columns([2, 1, 1, 1, 2])
    model = c1.selectbox("Model", models, key="grid_model")
    of_model = cells[cells["model"] == model]
    sparsities = sorted(of_model["sparsity"].dropna().unique(), reverse=True)
    if not sparsities:
        stop_with_info(f"No perplexity with a recorded sparsity for {plain(model)}.")
    from_url("grid_sparsity", sparsities)
    sparsity = c2.selectbox("Sparsity", sparsities, format_func=format_sparsity, key="grid_sparsity")
    # the notes' dataset (WikiText-2) or its offline stand-in first, then the other domains
    datasets = sorted(of_model["dataset"].dropna().unique(), key=lambda d: (d not in ("wikitext2", "wiki"), d))
    from_url("grid_dataset", datasets)
    dataset = (
        c3.selectbox("Dataset", datasets, key="grid_dataset") if len(datasets) > 1 else (datasets[0] if datasets else None)
    )
    from_url("grid_source", ["all", "reference", "run"])
    st.session_state.setdefault("grid_source", "all")
    source = c4.segmented_control("Results", ["all", "reference", "run"], key="grid_source") or "all"

    # one evaluation protocol per grid (pruning.evaluation.protocol): the team's full protocol unless another is chosen
    protocols = protocol_options(cells, model=model, sparsity=sparsity, dataset=dataset, source=source)
    in_scope = filter_cells(cells, model=model, sparsity=sparsity, dataset=dataset, source=source)
    protocol_text = dict(zip(in_scope["protocol"], in_scope["protocol_label"]))
    protocol_count = in_scope["protocol"].value_counts().to_dict()
    from_url("grid_protocol", protocols)
    if st.session_state.get("grid_protocol") not in protocols:  # another model/dataset: start from its default
        st.session_state.pop("grid_protocol", None)
    protocol = st.selectbox(
        "Evaluation protocol", protocols, key="grid_protocol",
        format_func=lambda p: f"{protocol_text.get(p, p)} · {protocol_count.get(p, 0)} values",
        help="values measured differently (another text, window length or window budget) are never merged; "
             "budgeted (smoke) runs have their own protocol",
    ) if len(protocols) > 1 else (protocols[0] if protocols else None)

    # one calibration per grid (pruning.calibration.protocol), among this protocol's values: the product's default
    # unless another is chosen; dense runs and the notes' references read none of theirs and stay in every view
    calibration = address.select_one(
        "Calibration", "grid_calibration",
        calibration_options(filter_cells(cells, model=model, sparsity=sparsity, dataset=dataset, source=source,
                                         protocol=protocol)),
        help="calibration text × windows × tokens of the pruned runs: allocations calibrated on other data are "
             "other experiments (the allocation study calibrates on wiki:train) and never share a grid")
    cells = by_calibration(cells, calibration)

    # several ε in one cell (the notes' GT, an ε sweep): show the best of all, or one ε
    eps_choices = epsilon_options(cells, model=model, sparsity=sparsity, dataset=dataset, source=source, protocol=protocol)
    # "best of all" is the option ALL_EPSILON, never None: a selectbox whose value is None shows "Choose an
    # option" (a reopened link with eps=all did); the address writes it as "all" (epsilon None)
    from_url("grid_epsilon", [None, *eps_choices])
    if st.session_state.get("grid_epsilon", ALL_EPSILON) is None:
        st.session_state["grid_epsilon"] = ALL_EPSILON
    if st.session_state.get("grid_epsilon") not in (ALL_EPSILON, *eps_choices):  # another model/sparsity: "all"
        st.session_state["grid_epsilon"] = ALL_EPSILON
    picked_eps = (
        c5.selectbox("ε", [ALL_EPSILON, *eps_choices], format_func=lambda e: "best of all" if e == ALL_EPSILON
                     else f"{e:g}", key="grid_epsilon", help="values without an ε (uniform, OWL) are always shown")
        if len(eps_choices) > 1 else ALL_EPSILON
    )
    epsilon = None if picked_eps == ALL_EPSILON else picked_eps
    # what a cell shows: the seeds of one setting averaged (as the allocation study reports them), or the best value
    from_url("grid_cellstat", list(CELL_STATS))
    if st.session_state.get("grid_cellstat") not in CELL_STATS:
        st.session_state["grid_cellstat"] = CELL_STATS[0]
    cell_stat = st.segmented_control(
        "Cell", list(CELL_STATS), format_func=CELL_STAT_LABELS.get, key="grid_cellstat",
        help="mean: the values of one setting (runs that differ only by their calibration seed) are averaged, "
             "± their sample std, and the cell shows the setting of lowest mean; lowest: the best single value "
             "(the luckiest seed)") or CELL_STATS[0]
    dense = dense_perplexity(load_perplexity_cells(catalog_version(), model, stage="dense"), model, dataset, protocol)
    grid = build_grid(cells, model=model, sparsity=sparsity, dataset=dataset, source=source, epsilon=epsilon,
                      protocol=protocol, dense=dense, cell=cell_stat)
    if grid.empty:
        stop_with_info(f"No {source} perplexities for {plain(model)} at {format_sparsity(sparsity)}.")

    assumed = of_model["sparsity_assumed"].fillna(False).astype(bool).any()
    budgeted = bool(in_scope.loc[in_scope["protocol"] == protocol, "budgeted"].any()) if protocol else False
    if budgeted:
        st.warning("Budgeted protocol (a smoke run's window budget): these perplexities cover only part of the "
                   "text and are not comparable with the full-protocol grid.")
    st.caption(
        f"{plain(dataset or '')} perplexity at {format_sparsity(sparsity)} sparsity"
        + (f" · protocol {protocol_text.get(protocol, protocol)}" if protocol else "")
        + (f" · calibration {plain(calibration)}" if calibration else "")
        + (" (assumed: the notes do not state it)" if assumed else "")
        + (f" · ε = {epsilon:g}" if epsilon is not None else "")
        + (f" · dense model {format_ppl(dense)}" if dense is not None else "")
        + " · " + cell_legend(grid.cell_stat, plain(grid.baseline) if grid.baseline else None)
        + f" · {OWN_RUN_MARK} = the team's own run · dark grey = nan (diverged), light grey = no result"
        + (" · sand = no baseline in its row" if grid.baseline else "")
        + " · click a cell to open it"
    )
    v1, v2, v3 = st.columns([1, 2, 1])  # grid_present was restored from the address at the top
    presentation = v1.toggle("Presentation mode", key="grid_present",
                             help="large high-contrast text and headers for a projector")
    colours = ["delta", "ppl"] if grid.baseline else ["ppl"]
    from_url("grid_colour", colours)
    if st.session_state.get("grid_colour") not in colours:
        st.session_state["grid_colour"] = colours[0]
    colour_by = v2.segmented_control("Colour by", colours, format_func=COLOUR_LABELS.get, key="grid_colour") or colours[0]
    image_format = v3.selectbox("Image export", IMAGE_FORMATS, format_func=str.upper, key="grid_image_format",
                                help="the camera button above the chart saves it in this format")
if presenting:
    legend = presentation_legend(grid.columns)
    chart_slot.caption(plain(f"{model} · {dataset or ''} perplexity at {format_sparsity(sparsity)} · "
                             + cell_legend(grid.cell_stat, grid.baseline) + " · three significant digits (every digit "
                             "in the hover and the table below)" + (f" · {legend}" if legend else "")))
event = (chart_slot if presenting else st).plotly_chart(
    grid_heatmap(grid, color_by=colour_by, presentation=presentation),
    key="grid_chart",
    on_select="rerun",
    selection_mode=("points", "box"),
    config={
        "displayModeBar": True, "displaylogo": False,
        "modeBarButtons": [["toImage"]],
        "toImageButtonOptions": {
            "format": image_format, "scale": 2,
            "filename": f"grid-{model}-{format_sparsity(sparsity)}".replace("%", "pct").replace(" ", "_"),
        },
    },
)

with st.expander("Grid as a table", expanded=False):
    table(grid.text.replace("<br>", " ", regex=True), "grid_table")

several = multi_value_cells(grid)
if not several.empty:
    st.subheader("Cells with several values")
    table(
        several,
        "grid_multi",
        hide_index=True,
        column_config={
            "ppl": st.column_config.NumberColumn(format="%.2f"),
            "delta_to_baseline": st.column_config.NumberColumn(f"Δ to {grid.baseline}", format="%+.2f"),
            "delta_pct": st.column_config.NumberColumn("Δ %", format="%+.1f %%"),
        },
    )

# ---- open a cell: chart click/box selection, or the selectbox fallback ------------------------------------
options = cell_options(grid)
from_url("grid_cell", options)
points = (event.selection.points if event and event.selection else None) or []
clicked = [tuple(p["customdata"]) for p in points if p.get("customdata")]
if clicked and clicked[0] in options and clicked[0] != st.session_state.get("grid_last_click"):
    st.session_state["grid_cell"] = st.session_state["grid_last_click"] = clicked[0]  # a new click wins once
if st.session_state.get("grid_cell") not in options:
    st.session_state.pop("grid_cell", None)
row, column = st.selectbox("Open cell", options, key="grid_cell", format_func=lambda rc: f"{rc[0]} / {rc[1]}")
address.write({"grid_model": model, "grid_sparsity": sparsity, "grid_dataset": dataset, "grid_source": source,
               "grid_calibration": calibration, "grid_protocol": protocol, "grid_epsilon": epsilon,
               "grid_cellstat": cell_stat, "grid_cell": (row, column), "grid_present": presentation,
               "grid_colour": colour_by})
detail = grid.cell(row, column)
table(detail, "grid_cell_detail", hide_index=True, column_config={
    "shown": st.column_config.CheckboxColumn("shown", help="the values the cell's number is made of"),
    "seed": st.column_config.NumberColumn("calibration seed", format="%d"),
})
# send the cell's runs, or its row's shown values, to Compare (the team's runs and the notes' reference sets)
cell_ids = list(dict.fromkeys(detail["run_id"].dropna()))
row_detail = grid.detail[grid.detail["row"] == row]
row_ids = list(dict.fromkeys(row_detail.loc[row_detail["shown"].astype(bool), "run_id"].dropna())) \
    if "shown" in row_detail.columns else list(dict.fromkeys(row_detail["run_id"].dropna()))
k1, k2 = st.columns(2)
to_compare = None
if k1.button(f"Compare this cell's {len(cell_ids)} run(s)", key="grid_compare_cell", disabled=not cell_ids):
    to_compare = cell_ids
if k2.button(f"Compare row {row}: {len(row_ids)} run(s) behind its shown values", key="grid_compare_row",
             disabled=len(row_ids) < 2):
    to_compare = row_ids
if to_compare:
    select_runs(to_compare)
    st.switch_page("pages/compare.py")
curve = epsilon_curve(detail)
if curve is not None:  # an ε sweep (or the notes' GT at several ε) in this cell
    st.plotly_chart(curve, key="grid_eps_curve", config={"displayModeBar": False})
run_id = st.selectbox("Run of this cell", detail["run_id"].tolist(), key="grid_cell_run")
show_run(run_id)
