"""Study: the allocation study (issue 16, ``pruning.study``) one cell at a time — every family side by
side on wiki test, lee and wiki_cloze (mean ± std over the calibration seeds), the lee-calibrated
column, the verdict in words, the validation runs behind each family's knobs, and each family's
sparsity and score per block. The numbers are those of ``scripts/allocation_study.py table``."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from pages_support.common import stop_with_info, table
from pages_support.frame import enter_page
from pages_support.loaders import (
    catalog_version, choices_stamp, load_choices, load_run_table, load_sensitivity, load_study,
)
from pages_support.sidebar import select_runs, selected_model
from pages_support.url import PageAddress
from pruning.app_support.plain import plain
from pruning.app_support.study_plots import family_score_chart, family_sparsity_chart
from pruning.app_support.study_view import (
    Cell, best_rows, cell_table, default_cell, family_name, final_run_ids, per_block, study_cells, unchosen_table, validation_candidates,
    verdict_text,
)
from pruning.app_support.urlstate import number_field, text_field
from pruning.study import FINAL_SEEDS, OURS, VALIDATION_DATASET
from pruning.study.sensitivity import PROXY_SENSITIVITY_TAG

# ?model=smollm2-135m&method=wanda&sparsity=0.7: a copied link opens the same cell
address = PageAddress("study", [text_field("model", "study_model"), text_field("method", "study_method"),
                                number_field("sparsity", "study_sparsity")])
VERDICT_BOX = {"win": st.success, "loss": st.error, "undecided": st.warning, "none": st.info}

enter_page()
st.title("Allocation study")
stamp = choices_stamp()
study, summary, verdicts = load_study(catalog_version(), stamp)
cells = study_cells(summary)
if not cells:
    stop_with_info("No final run of the allocation study in the store yet "
                   "(runs tagged allocation-study; scripts/allocation_study.py).")
st.caption(f"Every family's knobs chosen on {VALIDATION_DATASET} (calibration wiki:train, 128 × 2048); the final runs "
           f"read the whole wiki test split and lee once, with calibration seeds "
           f"{', '.join(f'{len(s)} at {k:.0%}' for k, s in FINAL_SEEDS.items())}. "
           "Ours wins a cell only where its mean beats every other family's by more than the seed spread "
           "(max of the two standard deviations).")

models = list(dict.fromkeys(c.model for c in cells))
address.restore("study_model", models)
if st.session_state.get("study_model") not in models:  # a fresh page: the sidebar's model, its fullest cell
    first = default_cell(cells, study, selected_model())
    st.session_state.update(study_model=first.model, study_method=first.method, study_sparsity=first.sparsity)
c1, c2, c3 = st.columns([2, 1, 1])
model = c1.selectbox("Model", models, key="study_model")
methods = list(dict.fromkeys(c.method for c in cells if c.model == model))
method = address.select_one("Method", "study_method", methods, container=c2)
sparsities = sorted({c.sparsity for c in cells if c.model == model and c.method == method})
address.restore("study_sparsity", sparsities)
if st.session_state.get("study_sparsity") not in sparsities:
    st.session_state["study_sparsity"] = default_cell([c for c in cells if c.model == model and c.method == method],
                                                      study).sparsity
sparsity = c3.selectbox("Sparsity", sparsities, key="study_sparsity", format_func=lambda s: f"{s:.0%}")
address.write({"study_model": model, "study_method": method, "study_sparsity": sparsity})
cell = Cell(model, method, float(sparsity))

for metric in ("wiki", "lee"):
    kind, sentence = verdict_text(verdicts, cell, metric)
    VERDICT_BOX[kind](plain(sentence))

rows = cell_table(summary, cell)
best = best_rows(summary, cell)
shown = rows.drop(columns=["family", "settings"])
no_domain = shown["wiki test ppl, lee-calibrated"].eq("").all()
if no_domain:
    shown = shown.drop(columns="wiki test ppl, lee-calibrated")
st.subheader(plain(f"{cell.text()}: every family"))
st.caption("mean ± std over the calibration seeds (ddof 1), seeds = runs in the mean, the best family of each column "
           "shaded; vs uniform = the change of the wiki test mean against uniform's; "
           + ("no lee-calibrated run in this cell yet. " if no_domain else
              "the lee-calibrated column is one seed calibrated on lee and read on wiki test. ")
           + "Select rows to send their runs to Compare.")
marks = pd.DataFrame("", index=shown.index, columns=shown.columns)
for header, family in best.items():
    if header in marks.columns:
        marks.loc[rows.index[rows["family"] == family], header] = "background-color: rgba(44, 160, 44, 0.22); font-weight: 600"
with st.container(key="study_table"):
    event = st.dataframe(
        shown.style.apply(lambda _: marks, axis=None), hide_index=True, on_select="rerun",
        selection_mode="multi-row", key="study_rows",
        column_config={
            "allocation": st.column_config.TextColumn("allocation", width="large", pinned=True),
            "knobs": st.column_config.TextColumn("knobs", width="small",
                                                 help="chosen on wiki:validation: OWL's M and λ, ε of the linear "
                                                 "allocations, DLP's α, ATP's β per block"),
            "seeds": st.column_config.NumberColumn("seeds", width="small"),
        },
    )
runs_of = final_run_ids(study, cell)
picked = [rows.iloc[i]["family"] for i in (event.selection.rows if event else [])]
send = [r for f in (picked or [f for f in runs_of if f != "dense"]) for r in runs_of.get(f, [])]
label = (f"Compare the {len(send)} runs of the selected families" if picked
         else f"Compare every family's runs of this cell ({len(send)})")
if st.button(label, key="study_compare", disabled=not send):
    select_runs(send)
    st.switch_page("pages/compare.py")
unchosen = unchosen_table(summary, cell)
if not unchosen.empty:
    with st.expander(f"Final runs of knobs that validation did not choose ({len(unchosen)}; never compared)"):
        table(unchosen, "study_unchosen", hide_index=True)

st.subheader("Allocation per block")
first = {f: ids[0] for f, ids in runs_of.items() if f != "dense" and ids}
allocations = {f: load_run_table(catalog_version(), run_id, "allocation") for f, run_id in first.items()}
blocks = per_block(allocations)
if blocks.empty:
    st.info("The final runs of this cell stored no allocation table.")
else:
    knobs_of = dict(zip(rows["family"], rows["settings"]))
    names = {f: family_name(f, knobs_of.get(f, "")) for f in first}
    st.caption("Each family's final run of the lowest calibration seed (OWL's and DLP's allocations move a little "
               "with the seed; the others do not). Parameter-weighted sparsity of each block's seven matrices.")
    st.plotly_chart(family_sparsity_chart(blocks, cell.sparsity, names), key="study_sparsity_chart")
    profiles, rhos = load_sensitivity(catalog_version(), stamp)
    mine = profiles[(profiles["model"] == model) & (profiles["method"] == method)] if not profiles.empty else profiles
    proxy = mine.empty
    if proxy:  # no profile of the full protocol: the CPU proxy's first look, said as such
        profiles, rhos = load_sensitivity(catalog_version(), stamp, PROXY_SENSITIVITY_TAG)
        mine = profiles[(profiles["model"] == model) & (profiles["method"] == method)] if not profiles.empty \
            else profiles
    measured = mine.set_index("block")["sensitivity"] if not mine.empty else None
    scores = family_score_chart(blocks, names, measured, float(mine["sparsity"].iloc[0]) if not mine.empty else None)
    if scores is not None:
        st.caption("The score each family allocated from, per block, each on its own scale (uniform has none)"
                   + ("; first, the measured sensitivity: each block pruned alone, log(ppl / dense) on "
                      "wiki:validation" if measured is not None else "")
                   + (f" — a CPU proxy (protocol {mine['protocol_label'].iloc[0]}, tag {PROXY_SENSITIVITY_TAG}), a "
                      "first look until the full protocol's profile is measured." if measured is not None and proxy
                      else "."))
        st.plotly_chart(scores, key="study_score_chart")
    if measured is None:
        st.caption("No measured per-block sensitivity for this model and method in the store yet "
                   "(scripts/allocation_study.py sensitivity writes its sweep).")
    else:
        of_cell = rhos[(rhos["model"] == model) & (rhos["method"] == method)] if not rhos.empty else rhos
        if not of_cell.empty:
            st.caption("Spearman ρ of each metric per block with the measured sensitivity; agrees = the sign of a "
                       "metric that ranks blocks as their sensitivity does (pruning.study.sensitivity.METRICS).")
            table(of_cell.drop(columns=["model", "method"]), "study_rho", hide_index=True,
                  column_config={"rho": st.column_config.NumberColumn("ρ", format="%+.2f")})

st.subheader("The validation runs behind each family's knobs")
cands = validation_candidates(load_choices(model, stamp), cell)
if cands.empty:
    st.info(plain(f"No choices file for {model} (docs/study/choices-{model}.json): "
                  f"scripts/allocation_study.py choose --model {model} writes it."))
else:
    families = list(dict.fromkeys(cands["family"]))
    for family in families:
        grp = cands[cands["family"] == family]
        best = grp[grp["chosen"]]
        best_text = (f"chosen {best.iloc[0]['knobs'] or '—'}: {best.iloc[0]['wiki:validation ppl']:.2f}"
                     if len(best) and pd.notna(best.iloc[0]["wiki:validation ppl"]) else "nothing chosen")
        with st.expander(plain(f"{family_name(family)} — {len(grp)} candidate(s), {best_text}"),
                         expanded=family == OURS):
            shown = grp.drop(columns=["family", "allocation"]).sort_values("wiki:validation ppl", na_position="last")
            table(shown, f"study_validation_{family}", hide_index=True, column_config={
                "wiki:validation ppl": st.column_config.NumberColumn(format="%.2f"),
                "chosen": st.column_config.CheckboxColumn("chosen"),
            })
            ids = [r for r in shown["run_id"] if r in set(study["run_id"])]
            if st.button(f"Compare these {len(ids)} validation runs", key=f"study_val_compare_{family}",
                         disabled=len(ids) < 1):
                select_runs(ids)
                st.switch_page("pages/compare.py")
