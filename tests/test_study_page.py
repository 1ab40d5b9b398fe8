"""The Study page (issue 29): one cell of the allocation study with every family in human names, the
verdict in words, the validation runs behind each choice and each family's allocation per block —
the pure helpers (pruning.app_support.study_view) on made-up frames where plausible wrong variants
disagree, and the page itself (AppTest) on a copy of the shipped store, against the numbers of
``scripts/allocation_study.py table``."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pruning.app_support.study_view import (
    Cell, best_rows, cell_table, default_cell, family_name, final_run_ids, per_block, short_knobs, study_cells,
    unchosen_table, validation_candidates, verdict_text,
)

REPO = Path(__file__).resolve().parents[1]
NAN = float("nan")
CELL = Cell("m", "wanda", 0.7)


def _summary_row(family: str, wiki: tuple[float, float, int], knobs: str = "", sparsity: float = 0.7,
                 lee: float = NAN, acc: float = NAN, domain: float = NAN, model: str = "m") -> dict:
    return {"model": model, "method": "dense" if family == "dense" else "wanda",
            "sparsity": 0.0 if family == "dense" else sparsity, "family": family, "knobs": knobs,
            "wiki_mean": wiki[0], "wiki_std": wiki[1], "wiki_n": wiki[2], "lee_mean": lee, "lee_std": NAN, "lee_n": 1,
            "wiki_cloze_mean": acc, "wiki_cloze_std": NAN, "wiki_cloze_n": 1, "lee_calibrated_wiki": domain}


SUMMARY = pd.DataFrame([
    _summary_row("dense", (19.2, NAN, 1), lee=25.9, acc=0.806),
    _summary_row("uniform", (1000.0, 100.0, 3), lee=1800.0, acc=0.36),
    _summary_row("depth", (316.24, 6.28, 3), "depth_beta=0.010345", lee=520.0, acc=0.41, domain=400.0),
    _summary_row("dlp", (361.0, 17.0, 3), "dlp_alpha=0.15", lee=590.0, acc=0.418),
    _summary_row("ours", (374.54, 21.72, 3), "preset=all, metric=hessian_alpha, metric_mix=alpha_peak, epsilon=0.2",
                 lee=640.0, acc=0.39),
    _summary_row("ours~", (880.0, 190.0, 3), "preset=split, metric=hessian_alpha, epsilon=0.1"),
    _summary_row("uniform", (216.0, 3.0, 3), sparsity=0.6),
])


def test_family_names_say_which_is_ours_and_its_variant() -> None:
    assert family_name("alpha_peak") == "AlphaPruning (weight α_peak)"
    assert family_name("depth") == "ATP (rising with depth)"
    assert family_name("ours", "preset=all, metric=hessian_alpha, metric_mix=depth, epsilon=0.2") == "★ ours: Hessian α + depth"
    assert family_name("ours", "preset=split, metric=hessian_alpha, epsilon=0.1") == "★ ours: Hessian α per sub-block"
    assert family_name("ours~", "preset=split, metric=hessian_alpha, epsilon=0.1").endswith("(not chosen on validation)")


def test_short_knobs_keep_only_what_the_name_does_not_say() -> None:
    assert short_knobs("preset=all, metric=hessian_alpha, metric_mix=depth, epsilon=0.2") == "ε 0.2"
    assert short_knobs("owl_threshold_m=5, owl_lambda=0.12") == "M 5, λ 0.12"
    assert short_knobs("depth_beta=0.010345") == "β 0.010345"
    assert short_knobs("—") == "—"


def test_cell_table_is_the_cell_with_dense_first_and_changes_against_uniform() -> None:
    rows = cell_table(SUMMARY, CELL)
    assert list(rows["family"]) == ["dense", "uniform", "depth", "dlp", "ours"]  # FAMILIES order, no 60 %, no ours~
    by = rows.set_index("family")
    assert by.at["depth", "wiki test ppl"] == "316.24 ± 6.28"
    assert by.at["uniform", "wiki test ppl"] == "1,000 ± 100.00"
    assert by.at["dense", "wiki test ppl"] == "19.20"
    assert by.at["depth", "vs uniform"] == "-68.4%"  # (316.24 - 1000) / 1000, against uniform of the same cell
    assert by.at["uniform", "vs uniform"] == "" and by.at["dense", "vs uniform"] == ""
    assert by.at["ours", "knobs"] == "ε 0.2" and by.at["ours", "allocation"] == "★ ours: Hessian α + weight α_peak"
    assert by.at["depth", "wiki test ppl, lee-calibrated"] == "400.00" and by.at["dlp", "wiki test ppl, lee-calibrated"] == ""
    assert list(unchosen_table(SUMMARY, CELL)["wiki test ppl"]) == ["880.00 ± 190.00"]


def test_best_rows_are_the_lowest_perplexity_and_the_highest_accuracy() -> None:
    best = best_rows(SUMMARY, CELL)
    assert best["wiki test ppl"] == "depth" and best["lee ppl"] == "depth"
    assert best["wiki_cloze acc"] == "dlp"  # highest accuracy, not lowest
    assert best["wiki test ppl, lee-calibrated"] == "depth"
    assert "dense" not in best.values()  # the unpruned model is never "best"


def _verdict(verdict: str, ahead: bool, rival: str = "depth", margin: float = -58.3, spread: float = 21.72) -> pd.DataFrame:
    return pd.DataFrame([{"model": "m", "method": "wanda", "sparsity": 0.7, "metric": "wiki", "ours": "374.54 ± 21.72 (n=3)",
                          "rival": rival, "rival_value": "316.24 ± 6.28 (n=3)", "margin": margin, "spread": spread,
                          "verdict": verdict, "ahead_on_means": ahead}])


def test_verdict_sentences_name_the_rival_and_say_win_loss_or_undecided() -> None:
    kind, text = verdict_text(_verdict("no", False), CELL, "wiki")
    assert kind == "loss" and "does not beat every rival" in text and "ATP (rising with depth)" in text
    assert "margin -58.30" in text and "seed spread 21.72" in text and text.startswith("wiki test:")
    kind, text = verdict_text(_verdict("no", True, margin=3.0), CELL, "wiki")
    assert kind == "loss" and "ahead on the means but not beyond the seed spread" in text
    assert verdict_text(_verdict("yes", True, margin=40.0), CELL, "wiki")[0] == "win"
    kind, text = verdict_text(_verdict("undecided: 1 seed", True, spread=NAN), CELL, "wiki")
    assert kind == "undecided" and "seed spread" not in text
    kind, text = verdict_text(_verdict("no (4 of 6 rivals)", False), CELL, "wiki")
    assert "(4 of 6 rivals)" in text
    assert verdict_text(_verdict("no", False), CELL, "lee")[0] == "none"  # no lee row
    assert verdict_text(_verdict("no", False), Cell("m", "wanda", 0.6), "wiki")[0] == "none"


def test_per_block_sparsity_is_parameter_weighted_and_the_score_is_the_block_mean() -> None:
    alloc = pd.DataFrame({"block": [0, 0, 1, 1], "numel": [300, 100, 300, 100], "score": [2.0, 4.0, 5.0, 5.0],
                          "sparsity_target": [0.8, 0.4, 0.5, 0.5], "sparsity_achieved": [0.8, 0.4, 0.5, 0.5]})
    out = per_block({"owl": alloc, "uniform": alloc.drop(columns="score"), "empty": pd.DataFrame()})
    owl = out[out["family"] == "owl"].set_index("block")
    assert math.isclose(owl.at[0, "sparsity"], 0.7)  # (0.8*300 + 0.4*100) / 400, not the plain mean 0.6
    assert owl.at[0, "score"] == 3.0 and owl.at[1, "score"] == 5.0
    assert out[out["family"] == "uniform"]["score"].isna().all() and "empty" not in set(out["family"])


def test_validation_candidates_flag_the_chosen_one_of_the_cell() -> None:
    cand = {"knobs": {"allocation.dlp_alpha": 0.1}, "variant": {}, "run_id": "wanda-a", "status": "succeeded",
            "validation_ppl": 300.0}
    other = {**cand, "knobs": {"allocation.dlp_alpha": 0.2}, "run_id": "wanda-b", "validation_ppl": 280.0}
    choices = {"model": "m", "cells": [
        {"method": "wanda", "sparsity": 0.7, "family": "dlp", "chosen": other, "candidates": [cand, other]},
        {"method": "wanda", "sparsity": 0.6, "family": "dlp", "chosen": cand, "candidates": [cand]},
    ]}
    out = validation_candidates(choices, CELL)
    assert list(out["run_id"]) == ["wanda-a", "wanda-b"] and list(out["chosen"]) == [False, True]
    assert list(out["knobs"]) == ["α 0.1", "α 0.2"]
    assert validation_candidates({**choices, "model": "other"}, CELL).empty
    assert validation_candidates(None, CELL).empty


RUNS = pd.DataFrame([
    {"run_id": r, "status": st, "phase": ph, "model": "m", "method": me, "sparsity": sp, "family": fa, "seed": se,
     "chosen": ch}
    for r, st, ph, me, sp, fa, se, ch in [
        ("d", "succeeded", "final", "dense", 0.0, "dense", 0, True),
        ("o2", "succeeded", "final", "wanda", 0.7, "ours", 2, True),
        ("o0", "succeeded", "final", "wanda", 0.7, "ours", 0, True),
        ("ox", "succeeded", "final", "wanda", 0.7, "ours", 0, False),
        ("of", "failed", "final", "wanda", 0.7, "ours", 1, True),
        ("u6", "succeeded", "final", "wanda", 0.6, "uniform", 0, True),
        ("u7", "succeeded", "final", "wanda", 0.7, "uniform", 0, True),
        ("v", "succeeded", "validation", "wanda", 0.7, "ours", 0, True),
    ]])


def test_final_run_ids_are_the_chosen_succeeded_runs_lowest_seed_first() -> None:
    assert final_run_ids(RUNS, CELL) == {"dense": ["d"], "uniform": ["u7"], "ours": ["o0", "o2"]}
    assert final_run_ids(RUNS, CELL, chosen_only=False)["ours"] == ["o0", "ox", "o2"]


def test_default_cell_is_the_one_where_ours_has_runs() -> None:
    cells = study_cells(SUMMARY)
    assert cells == [Cell("m", "wanda", 0.7), Cell("m", "wanda", 0.6)]
    assert default_cell(cells, RUNS) == CELL
    assert default_cell(cells, RUNS.iloc[0:0]) in cells


# ---- the page on the shipped store -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_copy(tmp_path_factory: pytest.TempPathFactory):
    """PRUNING_LAB_DATA pointed at a copy of the shipped data (the app may write caches next to it)."""
    data = tmp_path_factory.mktemp("shipped") / "data"
    shutil.copytree(REPO / "data", data, ignore=shutil.ignore_patterns("jobs", "tmp", ".lock"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNING_LAB_DATA", str(data))
        yield data


def _open_study(**params: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    at.run()
    at.switch_page("pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _study_frame(at) -> pd.DataFrame:
    """The page's family table (the dataframe with an allocation and a wiki test column)."""
    for df in at.dataframe:
        data = df.value
        data = data.data if hasattr(data, "data") else data  # a Styler: its frame
        if "allocation" in data.columns and "wiki test ppl" in data.columns:
            return data.reset_index(drop=True)
    raise AssertionError("no study table on the page")


@pytest.mark.shipped
def test_study_page_shows_the_table_the_script_prints(shipped_copy) -> None:
    from pruning.study import study_runs, study_table, summarize

    at = _open_study()
    assert [s.value for s in at.selectbox if s.key and s.key.startswith("study_")] == ["smollm2-135m", "wanda", 0.7]
    shown = _study_frame(at)
    printed = study_table(summarize(study_runs(shipped_copy / "store")))
    wanda70 = [line for line in printed.splitlines() if "| smollm2-135m | wanda | 70% |" in line]
    assert len(wanda70) == 8 and len(shown) == 8  # printed: 7 families + ours~; shown: dense + 7 families
    for text in shown["wiki test ppl"].iloc[1:]:  # every pruned family's mean ± std is a number of the script's table
        assert any(f"| {text} (n=3) |" in line for line in wanda70), text
    assert "316.24 ± 6.28" in set(shown["wiki test ppl"]) and "374.54 ± 21.72" in set(shown["wiki test ppl"])
    errors = [e.value for e in at.error]
    assert any("ours does not beat every rival" in e and "ATP" in e and "316.24" in e for e in errors), errors
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) == 2  # sparsity per block of every family, and the scores
    # a row of the grid sends its runs to Compare: ATP's three seeds
    at.session_state["study_rows"] = {"selection": {"rows": [list(shown["allocation"]).index("ATP (rising with depth)")],
                                                    "columns": [], "cells": []}}
    at.run()
    assert at.button(key="study_compare").label == "Compare the 3 runs of the selected families"
    at.button(key="study_compare").click().run()
    assert not at.exception, [e.value for e in at.exception]
    picked = at.session_state["sb_runs"]
    runs = study_runs(shipped_copy / "store")
    atp = runs[(runs["family"] == "depth") & (runs["phase"] == "final") & (runs["method"] == "wanda")
               & (runs["sparsity"] == 0.7)]
    assert sorted(picked) == sorted(atp["run_id"]) and len(picked) == 3
    assert any(t.value == "Compare runs" for t in at.title)


@pytest.mark.shipped
def test_study_link_restores_the_cell(shipped_copy) -> None:
    at = _open_study(model="smollm2-135m", method="sparsegpt", sparsity="0.6")
    assert at.session_state["study_method"] == "sparsegpt" and at.session_state["study_sparsity"] == 0.6
    shown = _study_frame(at)
    assert "71.66" in set(shown["wiki test ppl"])  # ours at SparseGPT 60 %, one seed
    assert any("undecided" in w.value for w in at.warning)


@pytest.mark.shipped
def test_a_grid_row_and_cell_send_their_runs_to_compare(shipped_copy) -> None:
    """Issue 29: a grid row or cell sends its runs to Compare (it took ~13 clicks to see why ATP wins)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.query_params.update({"model": "smollm2-135m", "sparsity": "0.7", "dataset": "wiki",
                            "calibration": "wiki:train · 128 × 2048", "cell": "Wanda/ATP"})
    at.run()
    at.switch_page("pages/grid.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="grid_cell").value == ("Wanda", "ATP")
    assert at.button(key="grid_compare_cell").label == "Compare this cell's 3 run(s)"
    at.button(key="grid_compare_cell").click().run()
    assert not at.exception and any(t.value == "Compare runs" for t in at.title)
    atp = set(at.session_state["sb_runs"])
    assert len(atp) == 3 and all(r.startswith("wanda-") for r in atp)

    again = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    again.query_params.update({"model": "smollm2-135m", "sparsity": "0.7", "dataset": "wiki",
                               "calibration": "wiki:train · 128 × 2048", "cell": "Wanda/ATP"})
    again.run()
    again.switch_page("pages/grid.py").run()
    label = again.button(key="grid_compare_row").label
    again.button(key="grid_compare_row").click().run()
    row = set(again.session_state["sb_runs"])
    # the shown values of the Wanda row: 3 seeds of each of the 8 study columns (the dense column is the
    # dense model's number, not a value of the row)
    assert atp < row and len(row) == 3 * 8, (label, len(row))
    assert label == f"Compare row Wanda: {len(row)} run(s) behind its shown values"
