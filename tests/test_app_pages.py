"""AppTest of every page of the dashboard: no exception and real content, on the notes and on a
synthetic run published into a temporary store (PRUNING_LAB_DATA via the data_dir fixture)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pruning.model.families import FAMILIES

REPO = Path(__file__).resolve().parents[1]
SEED_NOTES = REPO / "data" / "reference" / "research-notes.txt"
MATRIX_NAMES = FAMILIES["llama"].matrices  # matrix type -> path inside a block


def fill_with_notes(data_dir: Path) -> None:
    """Put the notes into the store under ``data_dir``: a copy of the shipped store when the repo
    has one, else an import of the seed notes."""
    shipped = REPO / "data" / "store"
    if (shipped / "runs").is_dir() and any((shipped / "runs").iterdir()):
        shutil.copytree(shipped, data_dir / "store", dirs_exist_ok=True, ignore=shutil.ignore_patterns("tmp", ".lock"))
        return
    from pruning.importers.notes import import_notes

    import_notes(SEED_NOTES)


def publish_synthetic_run(
    n_blocks: int = 6, method: str = "wanda", sparsity: float = 0.6, label: str = "synthetic", n_heads: int = 4,
    allocation: dict | None = None, pruned_ppl: float = 31.5, tags: tuple[str, ...] = (),
) -> str:
    """Publish a run of a made-up ``n_blocks``-block model with every table; returns its run id.
    ``allocation``: the run's allocation section (default: AlphaPruning, preset QKVout, ε 0.2)."""
    from pruning.config.run_config import RunConfig
    from pruning.store.publish import publish_run

    config = RunConfig.from_dict(
        {
            "model": {"name": f"synthetic-{n_blocks}-blocks"},
            "label": label,
            "tags": list(tags),
            "allocation": allocation
            or {"strategy": "linear", "preset": "QKVout", "metric": "alpha_peak", "epsilon": 0.2},
            "pruning": {"method": method, "sparsity": sparsity},
            "evaluation": {"attention": True},
        }
    )
    spectra, allocation, attention = [], [], []
    for block in range(n_blocks):
        for i, (mtype, suffix) in enumerate(MATRIX_NAMES.items()):
            name = f"model.layers.{block}.{suffix}"
            for source in ("weight", "hessian"):
                alpha = 2.0 + 0.1 * block + 0.01 * i + (1.0 if source == "hessian" else 0.0)
                spectra.append(
                    {
                        "model": config.model.name,
                        "block": block,
                        "matrix_type": mtype,
                        "name": name,
                        "source": source,
                        "alpha": alpha,
                        "alpha_peak": alpha + 0.05,
                        "stable_rank": 10.0 + block,
                        "xmin": 1.0,
                        "n_tail": 20,
                        "n_eigs": 64,
                        "status": "ok",
                    }
                )
            allocation.append(
                {
                    "block": block,
                    "matrix_type": mtype,
                    "name": name,
                    "numel": 4096,
                    "score": 2.0 + block,
                    "ratio": 1.0,
                    "sparsity_target": sparsity - 0.1 + 0.2 * block / max(n_blocks - 1, 1),
                    "sparsity_achieved": sparsity - 0.1 + 0.2 * block / max(n_blocks - 1, 1),
                }
            )
        for stage in ("dense", "pruned"):
            for head in range(n_heads):
                attention.append(
                    {
                        "stage": stage,
                        "block": block,
                        "head": head,
                        "statistic": "attn_entropy",
                        "value": 3.0 + 0.1 * head - (0.2 if stage == "pruned" else 0.0),
                    }
                )
            attention.append({"stage": stage, "block": block, "head": None, "statistic": "v_entropy", "value": 7.0})
    perplexity = pd.DataFrame(
        [
            {
                "stage": s,
                "dataset": "wiki",
                "seqlen": 128,
                "limit_windows": 4,
                "n_windows": 4,
                "total_windows": 100,
                "n_tokens": 512,
                "nll": np.log(p),
                "ppl": p,
            }
            for s, p in (("dense", 18.0), ("pruned", pruned_ppl))
        ]
    )
    zeroshot = pd.DataFrame(
        [
            {
                "stage": "pruned",
                "task": t,
                "metric": "acc",
                "filter": "none",
                "value": v,
                "stderr": 0.01,
                "task_version": "1",
                "num_fewshot": 0,
                "limit": 20.0,
                "harness_version": "0.4.13",
            }
            for t, v in (("boolq", 0.61), ("rte", 0.52))
        ]
    )
    publish_run(
        config,
        tables={
            "spectra": pd.DataFrame(spectra),
            "allocation": pd.DataFrame(allocation),
            "perplexity": perplexity,
            "attention": pd.DataFrame(attention),
            "zeroshot": zeroshot,
        },
    )
    return config.run_id


def plotly_specs(at: Any) -> list[dict]:
    """The figure JSON of every plotly chart on the page of an AppTest."""
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def frame(at: Any, key: str) -> pd.DataFrame:
    """The dataframe shown inside the keyed container ``key`` (see pages_support.common.table), or the
    selectable dataframe with that key."""
    for df in at.dataframe:
        if getattr(df, "key", None) == key:
            return df.value
    return at.container(key=key).dataframe[0].value


def decode(values: Any) -> list:
    """Plotly JSON arrays may be typed (``{"dtype", "bdata"}``); return plain lists."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"])).tolist()
    return list(values or [])


# ---- fixtures ---------------------------------------------------------------------------------------------
import pytest  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(REPO / "app.py")
TIMEOUT = 60


@pytest.fixture()
def notes_store(data_dir: Path) -> Path:
    """A temporary store holding the notes (references only)."""
    fill_with_notes(data_dir)
    return data_dir


@pytest.fixture()
def strategy_store(data_dir: Path) -> dict[str, str]:
    """Wanda runs of the synthetic 6-block model at 60 %, one per allocation strategy (tag
    study-validation): AlphaPruning (QKVout), uniform, DLP (preset QKVout too) and ATP."""
    runs = {
        "linear": (None, 31.5),
        "uniform": ({"strategy": "uniform"}, 35.0),
        "dlp": ({"strategy": "dlp", "preset": "QKVout", "dlp_alpha": 0.05}, 29.0),
        "depth": ({"strategy": "depth", "depth_beta": 0.004}, 33.0),
    }
    return {name: publish_synthetic_run(6, allocation=alloc, pruned_ppl=ppl, label=name, tags=("study-validation",))
            for name, (alloc, ppl) in runs.items()}


@pytest.fixture()
def full_store(notes_store: Path) -> dict[str, str]:
    """The notes plus two synthetic runs (6 blocks and 4 blocks)."""
    return {"six": publish_synthetic_run(6), "four": publish_synthetic_run(4, method="sparsegpt", label="four")}


def open_page(page: str | None = None, **state: Any) -> AppTest:
    """Run the app (optionally on ``pages/<page>.py``) with session_state preset."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---- pages ------------------------------------------------------------------------------------------------
def test_runs_page_lists_references_and_runs(full_store):
    at = open_page()
    table = frame(at, "runs_table")
    assert {"reference", "run"} <= set(table["kind"])
    assert full_store["six"] in set(table["run_id"])
    assert 22.01 in set(table["ppl"].round(2))
    assert {
        "model",
        "method",
        "preset",
        "metric",
        "epsilon",
        "sparsity",
        "ppl",
        "zeroshot_mean",
        "status",
        "tags",
    } <= set(table.columns)
    at.multiselect[0].set_value(["run"]).run()  # the "Kind" filter
    assert set(frame(at, "runs_table")["kind"]) == {"run"}


def test_runs_page_annotates_a_picked_run(full_store):
    at = open_page(picked_runs=[])
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    focus = at.selectbox(key="runs_focus").value
    at.text_area[0].set_value("looks good")
    at.text_input[1].set_value("keep, meeting")
    at.get("form_submit_button")[0].click().run()
    assert not at.exception
    from pruning.store.annotations import read_annotation

    ann = read_annotation(focus)
    assert ann["tags"] == ["keep", "meeting"] and ann["notes"][0]["text"] == "looks good"
    # the saved note shows in the run's detail (the rerun after saving keeps the row picked)
    at.session_state["runs_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    shown = [t.value for t in at.text]
    assert "notes:\nlooks good" in shown and "tags: keep, meeting" in shown


def test_runs_page_filters_groups_and_keeps_them_in_the_address(notes_store):
    """Issue 17: filters for sparsity / preset / metric / ε / protocol, group-by, the full preset text,
    and the filters in the address (a pasted link restores them)."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"preset": "QKVout + split", "sparsity": "0.7", "group": "method", "kind": "reference"})
    at.run()
    assert not at.exception
    table = frame(at, "runs_table")
    assert set(table["preset"]) == {"QKVout + split"} and set(table["kind"]) == {"reference"}
    assert set(table["sparsity"].round(3)) == {0.7} and 17.76 in set(table["ppl"].round(2))
    groups = frame(at, "runs_groups").set_index("method")
    assert groups.loc["sparsegpt", "best ppl"] == pytest.approx(17.76)
    # a view of several protocols cannot be grouped by method: their perplexities do not compare
    at.multiselect(key="runs_kinds").set_value([]).run()
    at.multiselect(key="runs_presets").set_value([]).run()
    assert any("protocols" in w.value for w in at.warning)
    at.multiselect(key="runs_protocols").set_value(["wiki full 175×2048"]).run()
    at.multiselect(key="runs_metrics").set_value(["hessian_alpha"]).run()
    at.text_input(key="runs_search").set_value("SPARSEGPT").run()
    assert not at.warning and at.query_params["protocol"] == "wiki full 175×2048" and at.query_params["q"] == "SPARSEGPT"
    table = frame(at, "runs_table")
    assert set(table["metric"]) == {"hessian_alpha"} and set(table["method"]) == {"sparsegpt"} and len(table) >= 3


@pytest.mark.shipped
def test_run_detail_lists_the_attempts_of_a_re_run(notes_store):
    """A run re-run after its input text changed (the shipped Wanda-uniform 70 % run) shows both
    attempts; the views read the latest, and a run published once shows no attempts table."""
    at = open_page()
    table = frame(at, "runs_table")
    rerun, once = "wanda-48b4f85d93d2", "sparsegpt-3d20a933d348"
    rows = [int(i) for i in table.index[table["run_id"].isin([rerun, once])]]
    at.session_state["runs_table"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()
    at.selectbox(key="runs_focus").set_value(rerun).run()
    assert not at.exception
    attempts = frame(at, "run_attempts")
    assert attempts["attempt"].tolist() == [1, 2] and attempts["latest"].tolist() == [False, True]
    assert attempts["ppl_wiki"].round(2).tolist() == [951.18, 829.47]
    assert any("attempt 2 of 2" in c.value for c in at.caption)
    assert table.set_index("run_id").loc[rerun, "ppl"].round(2) == 829.47  # the list reads the latest
    at.selectbox(key="runs_focus").set_value(once).run()
    assert not any("attempt" in c.value for c in at.caption)
    with pytest.raises(KeyError):
        frame(at, "run_attempts")


def test_runs_page_sends_selected_rows_to_compare(full_store):
    at = open_page()
    table = frame(at, "runs_table")
    rows = [int(i) for i in table.index[table["run_id"].isin([full_store["six"], full_store["four"]])]]
    at.session_state["runs_table"] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()
    at.button[0].click().run()  # "Compare 2 selected run(s)"
    assert not at.exception
    assert [t.value for t in at.title] == ["Compare runs"]
    assert set(at.session_state["sb_runs"]) == {full_store["six"], full_store["four"]}
    assert "pruning.method" in frame(at, "compare_diff").index


def test_grid_page_gives_dlp_and_atp_runs_their_own_columns(strategy_store):
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("synthetic-6-blocks").run()
    assert not at.exception
    grid = frame(at, "grid_table")
    assert list(grid.columns) == ["dense", "uniform", "DLP", "ATP", "QKVout"]  # baseline first, then strategies
    assert grid.loc["Wanda", "DLP"].startswith("● 29.00") and grid.loc["Wanda", "ATP"].startswith("● 33.00")
    assert grid.loc["Wanda", "QKVout"].startswith("● 31.50")  # the DLP run (29.00, preset QKVout) is not in it
    assert "×" not in grid.loc["Wanda", "QKVout"]


def test_runs_page_shows_the_allocation_knobs_of_the_study(strategy_store):
    at = open_page()
    table = frame(at, "runs_table").set_index("run_id")
    assert {"strategy", "dlp_alpha", "depth_beta", "owl_lambda", "dlp_statistic"} <= set(table.columns)
    assert table.loc[strategy_store["dlp"], "dlp_alpha"] == 0.05
    assert table.loc[strategy_store["dlp"], "dlp_statistic"] == "median"
    assert table.loc[strategy_store["depth"], "depth_beta"] == 0.004
    others = [strategy_store["linear"], strategy_store["uniform"]]
    assert table.loc[others, ["dlp_alpha", "depth_beta"]].isna().all().all()
    at.text_input(key="runs_search").set_value("study-validation").run()  # the study's tag
    at.multiselect(key="runs_strategies").set_value(["depth"]).run()
    shown = frame(at, "runs_table")
    assert shown["run_id"].tolist() == [strategy_store["depth"]] and at.query_params["strategy"] == "depth"
    at.multiselect(key="runs_strategies").set_value([]).run()
    at.multiselect(key="runs_dlp_alphas").set_value(["0.05"]).run()
    assert frame(at, "runs_table")["run_id"].tolist() == [strategy_store["dlp"]]
    at.multiselect(key="runs_dlp_alphas").set_value([]).run()
    at.selectbox(key="runs_group").set_value("strategy").run()
    groups = frame(at, "runs_groups").set_index("allocation")
    assert groups.loc["depth", "best ppl"] == 33.0 and groups.loc["dlp", "best ppl"] == 29.0


def test_grid_page_shows_the_notes_tables(notes_store):
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("LLaMA-7B").run()
    assert not at.exception
    grid = frame(at, "grid_table")
    assert list(grid.columns)[0] == "GT"
    assert grid.loc["Wanda", "QKVout"].startswith("22.01")
    assert grid.loc["SparseGPT", "QKVout + split"].startswith("17.76")
    assert grid.loc["magnitude", "QKVout"].startswith("198.12")
    traces = {t.get("name"): t for t in plotly_specs(at)[0]["data"]}
    heat, cells = traces["delta"], traces["cells"]  # coloured by Δ % to GT by default
    assert heat["type"] == "heatmap" and "22.01<br>(-6.4%)" in cells["text"] and "17.76<br>(-8.1%)" in cells["text"]
    at.segmented_control(key="grid_colour").set_value("ppl").run()
    assert "ppl" in {t.get("name") for t in plotly_specs(at)[0]["data"]}
    multi = frame(at, "grid_multi")  # several ε in one cell -> detail table
    assert {0.2, 0.21} <= set(multi["epsilon"].dropna().round(2))
    # open a cell (selectbox fallback of the chart click) -> its value, raw text and source line
    at.selectbox(key="grid_cell").set_value(("SparseGPT", "QKVout + split")).run()
    detail = frame(at, "grid_cell_detail")
    assert detail["ppl"].tolist() == [17.76] and detail["source_line"].tolist() == [19]


def test_grid_page_legible_huge_and_nan(notes_store):
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("LLaMA-3-8B").run()
    grid = frame(at, "grid_table")
    assert grid.loc["magnitude", "GT"] == "219k" and grid.loc["magnitude", "Q out"].startswith("54.9k")
    at.selectbox(key="grid_model").set_value("LLaMA-2-7B").run()
    assert frame(at, "grid_table").loc["magnitude", "GT"].startswith("nan")


@pytest.mark.shipped
def test_grid_page_shows_the_shipped_smollm2_grid(notes_store):
    """Issue 10: every cell of the team's own SmolLM2 grid is on the page, with the dense model's
    perplexity beside it (the SmolLM2 grid has no GT column)."""
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("smollm2-135m").run()
    at.selectbox(key="grid_sparsity").set_value(0.7).run()
    at.selectbox(key="grid_dataset").set_value("wiki").run()
    grid = frame(at, "grid_table")
    assert list(grid.index) == ["magnitude", "Wanda", "SparseGPT"]
    # no GT here: the dense model is pinned first and uniform is the baseline of the deltas (in %)
    assert list(grid.columns) == ["dense", "uniform", "OWL", "all", "Q OUT GATE", "QKVout", "QKVout + split",
                                  "all · alpha", "all · hessian_alpha"]
    assert grid["dense"].tolist() == ["19.21"] * 3
    # the grid's 21 cells, plus WeightWatcher's alpha (follow-up sweep: Wanda and SparseGPT only)
    assert (grid.drop(columns="all · alpha") != "").all().all()
    assert grid["all · alpha"].tolist() == ["", "● 400.03 (-51.8%) ×2", "● 179.06 (-12.0%) ×2"]
    assert grid.loc["SparseGPT", "all · hessian_alpha"] == "● 177.84 (-12.6%) ×3"  # 177.84 / 203.50 - 1
    assert grid.loc["Wanda", "all · hessian_alpha"] == "● 348.88 (-57.9%) ×3"
    assert grid.loc["Wanda", "uniform"] == "● 829.47"
    assert grid.loc["Wanda", "all"] == "● 392.88 (-52.6%) ×10"  # the ε sweeps: best of ten values, listed below
    assert any("dense model 19.21" in c.value for c in at.caption)
    assert any("protocol full: 175 × 2048 tokens (358,225 scored), text 0cc60813" in c.value for c in at.caption)
    multi = frame(at, "grid_multi")
    eps = [0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5]
    assert sorted(multi.loc[(multi["row"] == "Wanda") & (multi["column"] == "all"), "epsilon"].round(2)) == eps
    # the ε sweep's cell draws perplexity against ε
    at.selectbox(key="grid_cell").set_value(("Wanda", "all")).run()
    assert decode(eps_curve(at)["data"][0]["x"]) == eps
    assert [round(v, 2) for v in decode(eps_curve(at)["data"][0]["y"])] == WANDA_70_ALL_CURVE
    # the ε filter: the grid's own ε (0.2) leaves one value per cell
    assert at.selectbox(key="grid_epsilon").options == ["best of all", *(f"{e:g}" for e in eps)]
    at.selectbox(key="grid_epsilon").set_value(0.2).run()
    grid = frame(at, "grid_table")
    assert grid.loc["Wanda", "all"] == "● 452.23 (-45.5%)" and grid.loc["Wanda", "uniform"] == "● 829.47"
    assert grid.loc["Wanda", "all · alpha"] == "● 444.31 (-46.4%)"
    assert grid.loc["Wanda", "all · hessian_alpha"] == "● 358.83 (-56.7%)"
    assert any("ε = 0.2" in c.value for c in at.caption)
    # another sparsity holds other ε (the follow-up's 0.3 at 50 %): a choice it lacks (0.35) is dropped
    at.selectbox(key="grid_epsilon").set_value(0.35).run()
    at.selectbox(key="grid_sparsity").set_value(0.5).run()
    assert not at.exception
    assert at.selectbox(key="grid_epsilon").options == ["best of all", "0.2", "0.3"]
    assert at.selectbox(key="grid_epsilon").value == "all"  # "best of all" (never None: it showed "Choose an option")


def test_grid_page_keeps_each_calibration_apart(notes_store):
    """Issue 16: the allocation study calibrates on wiki:train, the notes' grid on the wiki calib
    split. The grid starts on the product's default calibration; the study's runs are a grid of
    their own (DLP and ATP columns, seeds counted), and the dense model stays in both."""
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("smollm2-135m").run()
    at.selectbox(key="grid_sparsity").set_value(0.7).run()
    at.selectbox(key="grid_dataset").set_value("wiki").run()
    # the precision check's bfloat16 twins are a protocol of their own (never a cell of the float32 runs)
    assert at.selectbox(key="grid_calibration").options == ["wiki · 128 × 2048", "wiki:train · 128 × 2048",
                                                            "wiki:train · 128 × 2048 · bfloat16"]
    assert at.selectbox(key="grid_calibration").value == "wiki · 128 × 2048"
    assert "DLP" not in frame(at, "grid_table").columns
    at.selectbox(key="grid_calibration").set_value("wiki:train · 128 × 2048").run()
    grid = frame(at, "grid_table")
    assert list(grid.index) == ["Wanda", "SparseGPT"]
    assert list(grid.columns)[:5] == ["dense", "uniform", "OWL", "DLP", "ATP"] and "QKVout" not in grid.columns
    # the cell shows the mean ± std over its 3 calibration seeds (the study table's 316.24 ± 6.28), its Δ % to
    # uniform's mean (1024.14); until the "Cell" control existed it showed the best seed, 310.71 (-64.4%)
    assert at.segmented_control(key="grid_cellstat").value == "mean"
    assert grid.loc["Wanda", "ATP"] == "● 316.24 ± 6.28 (-69.1%) ×3"
    assert grid["dense"].tolist() == ["19.21"] * 2
    assert any("calibration wiki\\:train · 128 × 2048" in c.value for c in at.caption)  # plain(): no emoji shortcode
    assert any("cell = mean ± std over the calibration seeds of one setting" in c.value for c in at.caption)
    assert at.query_params["cellstat"] == "mean"
    at.segmented_control(key="grid_cellstat").set_value("lowest").run()
    assert frame(at, "grid_table").loc["Wanda", "ATP"] == "● 310.71 (-64.4%) ×3"  # the best of its 3 seeds
    assert any("cell = best value, (Δ % to uniform), ×count" in c.value for c in at.caption)
    assert at.query_params["cellstat"] == "lowest"
    assert not at.exception


WANDA_70_ALL_CURVE = [632.69, 457.73, 423.72, 452.23, 392.88, 405.29, 555.26, 702.91, 2709.98, 2312.89]


def eps_curve(at: AppTest) -> dict:
    """The ε curve's plotly spec (the only scatter on a log y axis)."""
    return next(spec for spec in plotly_specs(at) if spec["layout"].get("yaxis", {}).get("type") == "log"
                and spec["data"][0]["type"] == "scatter")


def open_smollm2_wanda_70_all(at: AppTest) -> AppTest:
    at.selectbox(key="grid_model").set_value("smollm2-135m").run()
    at.selectbox(key="grid_sparsity").set_value(0.7).run()
    at.selectbox(key="grid_dataset").set_value("wiki").run()
    at.selectbox(key="grid_cell").set_value(("Wanda", "all")).run()
    return at


def test_grid_page_never_merges_a_budgeted_smoke_run_into_the_full_protocol(notes_store):
    """Issue 15: a smoke run launched from the form (1 window of 8 tokens, perplexity 1,837) lands in
    SmolLM2 / Wanda / 70 % / `all`. The full-protocol cell, its ×n count and its ε curve stay what they
    were; the smoke run appears only when its protocol is chosen, labelled as budgeted."""
    from smoke_runs import SMOKE_PPL, publish_smoke_run

    before = open_smollm2_wanda_70_all(open_page("grid"))
    cell_before = frame(before, "grid_table").loc["Wanda", "all"]
    detail_before = frame(before, "grid_cell_detail")
    assert cell_before == "● 392.88 (-52.6%) ×10" and len(detail_before) == 10
    run_id = publish_smoke_run()

    at = open_smollm2_wanda_70_all(open_page("grid"))
    assert frame(at, "grid_table").loc["Wanda", "all"] == cell_before
    detail = frame(at, "grid_cell_detail")
    assert len(detail) == 10 and run_id not in set(detail["run_id"])
    assert [round(v, 2) for v in decode(eps_curve(at)["data"][0]["y"])] == WANDA_70_ALL_CURVE
    assert not at.warning
    # two protocols now: the team's full one (the default) and the smoke run's budgeted one
    options = at.selectbox(key="grid_protocol").options
    assert len(options) == 2 and options[0].startswith("full: 175 × 2048 tokens")
    assert options[1] == "budgeted: 1 of 44,778 windows × 8 tokens, text 0cc60813 · 1 values"
    at.selectbox(key="grid_protocol").set_value("wiki|0cc60813547efec8|8|1/44778|8").run()
    grid = frame(at, "grid_table")
    assert grid.loc["Wanda", "all"] == f"● {SMOKE_PPL:.0f}" and (grid.drop(columns="all") == "").all().all()
    assert any("Budgeted protocol" in w.value for w in at.warning)
    # the runs table labels it, the compare page warns that the two perplexities are not comparable
    runs_page = open_page()
    table = frame(runs_page, "runs_table").set_index("run_id")
    assert table.loc[run_id, "ppl_protocol"] == "wiki budgeted 1/44,778×8"
    assert table.loc["wanda-7c13a24b2dc1", "ppl_protocol"] == "wiki full 175×2048"
    assert table.loc[table["kind"] == "reference", "ppl_protocol"].dropna().unique().tolist() == ["wikitext2 as published"]
    compare = open_page("compare", sb_runs=[run_id, "wanda-7c13a24b2dc1"])
    assert any("different protocols" in w.value for w in compare.warning)


def test_grid_page_marks_own_runs(full_store):
    at = open_page("grid")
    at.selectbox(key="grid_model").set_value("synthetic-6-blocks").run()
    grid = frame(at, "grid_table")
    assert grid.loc["Wanda", "QKVout"] == "● 31.50"


def test_spectra_page_plots_every_block(full_store):
    at = open_page("spectra", sb_runs=[full_store["six"]])
    by_block = plotly_specs(at)[0]
    lines = [t for t in by_block["data"] if t["type"] == "scatter"]
    assert len(lines) == 7  # one panel per matrix type
    assert all(decode(t["x"]) == list(range(6)) for t in lines)
    alloc = plotly_specs(at)[1]
    bars = [t for t in alloc["data"] if t["type"] == "bar"]
    assert bars and bars[0]["yaxis"] == "y2" and len(decode(bars[0]["x"])) == 6  # sparsity on the secondary axis
    # two runs overlaid: 4-block run adds 7 more lines with 4 points each
    at.session_state["sb_runs"] = [full_store["six"], full_store["four"]]
    at.run()
    lines = [t for t in plotly_specs(at)[0]["data"] if t["type"] == "scatter"]
    assert sorted({len(decode(t["x"])) for t in lines}) == [4, 6] and len(lines) == 14
    at.radio(key="spectra_source").set_value("hessian").run()
    assert not at.exception
    rows = frame(at, "spectra_rows")
    assert set(rows["source"]) == {"weight", "hessian"}


def test_attention_page_dense_vs_pruned_with_notes_average(full_store):
    at = open_page("attention", sb_runs=[full_store["six"]])
    summary = frame(at, "attention_summary")
    llama = summary[summary["model"] == "LLaMA-7B"]
    assert llama["v_entropy"].round(4).tolist() == [7.6593]
    at.selectbox(key="attention_statistic").set_value("v_entropy").run()
    at.selectbox(key="attention_ref").set_value("LLaMA-7B").run()
    spec = plotly_specs(at)[0]
    assert {t["name"].split(" · ")[-1] for t in spec["data"]} == {"dense", "pruned"}
    assert any("7.659" in (a.get("text") or "") for a in spec["layout"].get("annotations", []))
    at.selectbox(key="attention_statistic").set_value("attn_entropy").run()
    table = frame(at, "attention_dense_pruned")
    assert table["change"].round(3).unique().tolist() == [-0.2]


@pytest.mark.shipped
def test_zeroshot_page_table(full_store):
    """One protocol per table (few-shot, example limit, harness version): the shipped SmolLM2 runs
    (every example, lm-eval 0.4.13) by default; the notes' LLaMA-7B scores (old harness) and the
    synthetic runs (limit 20: budgeted) each when chosen, never in one table."""
    at = open_page("zeroshot")
    assert at.selectbox(key="zeroshot_protocol").options == [
        "0-shot, every example, lm-eval 0.4.13", "0-shot, every example, lm-eval 0.3",
        "0-shot, limit 20 (budgeted), lm-eval 0.4.13"]
    table = frame(at, "zeroshot_table")
    # 86 runs (the pruned stage: all but dense) of one task: one row per run, not 86 columns (issue 29)
    assert list(table.columns) == ["wiki_cloze", "MEAN"] and len(table.index) == 86
    assert not at.warning
    assert all(r.startswith("[run] smollm2-135m · ") for r in table.index)  # run labels, not bare ids
    assert "[run] smollm2-135m · wanda · all · hessian_alpha · 70% · ε 0.2" in table.index
    bars = next(s for s in plotly_specs(at) if s["data"][0]["type"] == "bar")["data"][0]
    values = decode(bars["x"])
    assert len(values) == 86 and values == sorted(values) and bars["orientation"] == "h"  # best on top
    at.selectbox(key="zeroshot_protocol").set_value("0-shot, every example, lm-eval 0.3").run()
    table = frame(at, "zeroshot_table")
    ref = table.columns[0]
    assert len(table.columns) == 1 and ref.startswith("[ref] LLaMA-7B · ")
    assert table.loc["MEAN", ref].startswith("0.4472")
    assert table.loc["boolq", ref] == "0.6624 ± 0.0083"
    at.selectbox(key="zeroshot_protocol").set_value("0-shot, limit 20 (budgeted), lm-eval 0.4.13").run()
    table = frame(at, "zeroshot_table")
    six = "[run] synthetic-6-blocks · wanda · QKVout · alpha_peak · 60% · ε 0.2"
    assert set(table.columns) == {six, "[run] synthetic-4-blocks · sparsegpt · QKVout · alpha_peak · 60% · ε 0.2"}
    assert table.loc["MEAN", six].startswith("0.5650")
    assert any("Budgeted protocol" in w.value for w in at.warning)
    meta = frame(at, "zeroshot_meta")
    assert set(meta["harness_version"]) == {"0.4.13"}


def test_compare_page_diff_and_overlays(full_store):
    at = open_page("compare", sb_runs=[full_store["six"], full_store["four"]])
    diff = frame(at, "compare_diff")
    assert {"model.name", "pruning.method"} <= set(diff.index) and "allocation.epsilon" not in diff.index
    from pruning.app_support.formatting import unique_run_labels
    from pruning.store.queries import list_runs

    labels = unique_run_labels(list_runs().to_dict("records"))
    sparsity, metric = plotly_specs(at)[:2]
    names = {t["name"] for t in sparsity["data"]}
    assert names == {labels[full_store["six"]], labels[full_store["four"]]}  # readable labels, not bare ids
    # one colour per run across both charts of the page, and the two runs' colours differ
    colour_of = [{t["name"]: t["line"]["color"] for t in fig["data"] if t.get("showlegend", True) is not False}
                 for fig in (sparsity, metric)]
    assert colour_of[0] == {n: c for n, c in colour_of[1].items() if n in colour_of[0]} and len(colour_of[0]) == 2
    assert len(set(colour_of[0].values())) == 2


def test_compare_page_needs_two_runs(notes_store):
    at = open_page("compare")
    assert "two or more" in at.info[0].value


def _queue_jobs() -> list:
    from pruning.jobs import list_jobs

    return list_jobs(refresh=False)


@pytest.mark.parametrize(
    "field, widget, value",
    [
        ("pruning.sparsity", "number_input", 1.2),
        ("allocation.epsilon", "number_input", -0.1),
        ("allocation.preset", "text_input", "QKV sideways"),
        ("model.name", "text_input", "/etc"),
    ],
)
def test_launch_rejects_bad_input_inline(notes_store, field, widget, value):
    at = open_page("launch")
    getattr(at, widget)(key=f"launch.{field}").set_value(value)
    at.button(key="launch.submit").click().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors and errors[0].startswith(field), errors
    assert _queue_jobs() == []


def test_launch_shows_the_knobs_of_the_chosen_strategy_and_needs_atp_beta(data_dir, monkeypatch):
    monkeypatch.setattr("pruning.jobs.ensure_local_worker", lambda *a, **k: None)
    at = open_page("launch")
    keys = lambda: {n.key for n in at.number_input} | {s.key for s in at.selectbox}  # noqa: E731
    assert not {"launch.allocation.dlp_alpha", "launch.allocation.depth_beta"} & keys()  # linear: ε only
    at.selectbox(key="launch.allocation.strategy").set_value("dlp").run()
    assert {"launch.allocation.dlp_alpha", "launch.allocation.dlp_statistic"} <= keys()
    assert "launch.allocation.depth_beta" not in keys()
    at.selectbox(key="launch.allocation.strategy").set_value("depth").run()
    assert "launch.allocation.depth_beta" in keys() and "launch.allocation.dlp_alpha" not in keys()
    at.button(key="launch.submit").click().run()  # ATP without β
    errors = [e.value.replace("\\", "") for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("allocation.depth_beta: strategy 'depth' needs depth_beta")
    assert _queue_jobs() == []
    at.number_input(key="launch.allocation.depth_beta").set_value(0.004)
    at.selectbox(key="launch.calibration.dataset").set_value("wiki:train")
    at.multiselect(key="launch.evaluation.perplexity").set_value(["wiki:validation"])
    at.button(key="launch.submit").click().run()
    assert not at.error, [e.value for e in at.error]
    (job,) = _queue_jobs()
    assert job.config["allocation"]["strategy"] == "depth" and job.config["allocation"]["depth_beta"] == 0.004
    assert job.config["calibration"]["dataset"] == "wiki:train"
    assert list(job.config["evaluation"]["perplexity"]) == ["wiki:validation"]


def test_launch_submits_once_and_starts_a_worker(notes_store, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr("pruning.jobs.ensure_local_worker", lambda *a, **k: started.append(1) or 4242)
    monkeypatch.setenv("PRUNING_LAB_MODEL_ROOTS", str(tmp_path))
    (tmp_path / "tiny").mkdir()
    at = open_page("launch")
    at.text_input(key="launch.model.name").set_value(str(tmp_path / "tiny"))
    at.selectbox(key="launch.pruning.method").set_value("magnitude")
    at.selectbox(key="launch.allocation.strategy").set_value("uniform")
    at.button(key="launch.submit").click().run()
    assert not at.error, [e.value for e in at.error]
    at.button(key="launch.submit").click().run()  # a double click submits the same token again
    jobs = _queue_jobs()
    assert len(jobs) == 1 and jobs[0].config["model"]["name"] == str(tmp_path / "tiny")
    assert started and "Submitted 1 job" in at.success[0].value
    assert any("Already submitted" in w.value for w in at.warning)


def test_launch_sweep_counts_jobs_before_submitting(notes_store, monkeypatch):
    monkeypatch.setattr("pruning.jobs.ensure_local_worker", lambda *a, **k: None)
    at = open_page("launch")
    at.multiselect(key="sweep.methods").set_value(["magnitude", "wanda"])
    at.text_input(key="sweep.eps").set_value("0.1, 0.2, 0.3").run()
    assert at.metric[0].value == "6"
    assert _queue_jobs() == []
    at.text_input(key="sweep.sparsity").set_value("0.5, 1.5").run()  # invalid combinations: no submit
    assert any(e.value.startswith("pruning.sparsity") for e in at.error)
    assert at.button(key="sweep.submit").disabled
    at.text_input(key="sweep.sparsity").set_value("0.5").run()
    at.button(key="sweep.submit").click().run()
    assert len(_queue_jobs()) == 6


def test_jobs_page_lists_and_cancels(notes_store):
    from pruning.config.run_config import RunConfig
    from pruning.jobs import submit

    job = submit(RunConfig.from_dict({"pruning": {"method": "magnitude"}, "label": "to cancel"})).job
    at = open_page("jobs")
    assert any(job.job_id in m.value for m in at.markdown)
    assert at.get("progress")
    at.button(key=f"cancel-{job.job_id}").click().run()
    assert not at.exception
    assert _queue_jobs()[0].state == "cancelled"
    assert at.button(key=f"retry-{job.job_id}")


def test_grid_view_lives_in_the_address(notes_store):
    """Issue 17: a link restores model, sparsity, dataset, ε, the cell statistic and the opened cell; changing a widget
    rewrites the address (the model too: a copied link never names the previous table); a value the
    page does not offer (a stale link) is ignored."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"model": "smollm2-135m", "sparsity": "0.6", "dataset": "lee", "eps": "0.3",
                            "cell": "Wanda/all", "cellstat": "lowest"})
    at.run()
    at.switch_page("pages/grid.py").run()
    assert not at.exception
    assert at.selectbox(key="grid_model").value == "smollm2-135m"
    assert at.selectbox(key="grid_sparsity").value == 0.6 and at.selectbox(key="grid_dataset").value == "lee"
    assert at.selectbox(key="grid_epsilon").value == 0.3 and at.selectbox(key="grid_cell").value == ("Wanda", "all")
    assert frame(at, "grid_table").loc["Wanda", "all"] == "● 181.84 (-17.2%)"  # lee, ε 0.3, 60 %, to uniform
    assert at.query_params["cell"] == "Wanda/all" and at.query_params["eps"] == "0.3"
    assert at.segmented_control(key="grid_cellstat").value == "lowest" and at.query_params["cellstat"] == "lowest"
    at.selectbox(key="grid_model").set_value("LLaMA-7B").run()
    assert at.query_params["model"] == "LLaMA-7B" and at.query_params["dataset"] == "wikitext2"
    assert at.query_params["sparsity"] == "0.7"
    # a stale link: an unknown model and a sparsity the table lacks fall back to the defaults, no error
    stale = AppTest.from_file(APP, default_timeout=TIMEOUT)
    stale.query_params.update({"model": "no-such-model", "sparsity": "0.33", "eps": "nan", "cell": "x",
                               "cellstat": "median"})
    stale.run()
    stale.switch_page("pages/grid.py").run()
    assert not stale.exception and stale.selectbox(key="grid_model").value in {"smollm2-135m", "LLaMA-7B"}
    assert stale.segmented_control(key="grid_cellstat").value == "mean"


def test_sidebar_selection_lives_in_the_address_and_finds_a_run_by_id(notes_store):
    """Issue 17: the sidebar's model and runs are in the address (a pasted link restores the Compare
    selection), and a run can be added by its id or its hash."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"m": "smollm2-135m", "runs": "wanda-7c13a24b2dc1,no-such-run"})
    at.run()
    assert not at.exception
    assert at.selectbox(key="sb_model").value == "smollm2-135m"
    assert at.multiselect(key="sb_runs").value == ["wanda-7c13a24b2dc1"]  # an unknown id in a link is dropped
    assert at.query_params["runs"] == "wanda-7c13a24b2dc1"
    runs = frame(at, "runs_table")
    other = next(r for r in runs["run_id"] if r.startswith("sparsegpt-"))
    at.text_input(key="sb_find").set_value(other.split("-", 1)[1][:10]).run()  # the hash, as a label shows it
    assert at.multiselect(key="sb_runs").value == ["wanda-7c13a24b2dc1", other]
    assert at.query_params["runs"] == f"wanda-7c13a24b2dc1,{other}"
    at.text_input(key="sb_find").set_value("zzz-nothing").run()
    assert any("no run id is or contains 'zzz-nothing'" in c.value for c in at.sidebar.caption)
    at.text_input(key="sb_find").set_value("wanda-").run()
    assert any("run ids match 'wanda-'" in c.value for c in at.sidebar.caption)
    at.switch_page("pages/compare.py").run()
    assert not at.exception and len(plotly_specs(at)) >= 1  # the two runs from the link are compared


def _from_link(params: dict[str, str], page: str) -> AppTest:
    """A fresh browser opening a pasted link: a new session with ``params`` in the address."""
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update(params)
    at.switch_page(f"pages/{page}.py").run()  # the link's page is the first one drawn
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_every_page_writes_its_view_into_the_address_and_a_link_restores_it(full_store):
    """Issue 17: spectra, attention, zero-shot and compare keep their widgets in the address; a
    second session opened on the address the first one wrote shows the same view."""
    six, four = full_store["six"], full_store["four"]
    # spectra: runs (sidebar), source, metric, focused run and matrix
    at = open_page("spectra", sb_runs=[six, four])
    at.radio(key="spectra_source").set_value("hessian").run()
    at.selectbox(key="spectra_metric").set_value("stable_rank").run()
    at.selectbox(key="spectra_focus").set_value(four).run()
    matrix = at.selectbox(key="spectra_matrix").options[-1]
    at.selectbox(key="spectra_matrix").set_value(matrix).run()
    link = dict(at.query_params)
    assert link["source"] == "hessian" and link["metric"] == "stable_rank" and link["run"] == four
    assert link["runs"] == f"{six},{four}"
    again = _from_link(link, "spectra")
    assert again.multiselect(key="sb_runs").value == [six, four]
    assert (again.radio(key="spectra_source").value, again.selectbox(key="spectra_metric").value) == ("hessian", "stable_rank")
    assert again.selectbox(key="spectra_focus").value == four and again.selectbox(key="spectra_matrix").value == matrix
    # attention: statistic and the notes' reference
    at = open_page("attention", sb_runs=[six])
    at.selectbox(key="attention_statistic").set_value("v_entropy").run()
    at.selectbox(key="attention_ref").set_value("LLaMA-7B").run()
    again = _from_link(dict(at.query_params), "attention")
    assert again.selectbox(key="attention_statistic").value == "v_entropy"
    assert again.selectbox(key="attention_ref").value == "LLaMA-7B"
    # zero-shot: the protocol
    at = open_page("zeroshot")
    at.selectbox(key="zeroshot_protocol").set_value("0-shot, every example, lm-eval 0.3").run()
    again = _from_link(dict(at.query_params), "zeroshot")
    assert again.selectbox(key="zeroshot_protocol").value == "0-shot, every example, lm-eval 0.3"
    # a hand-edited link with values the page does not offer is ignored, never an error
    again = _from_link({"metric": "no-such-metric", "source": "nowhere", "runs": six}, "spectra")
    assert again.selectbox(key="spectra_metric").value == "alpha_peak"


def test_spectra_page_opens_on_a_run_with_spectra(full_store):
    """Issue 29: Spectra opened on the newest run whatever it was; a uniform run (no spectra) gave no chart."""
    import pandas as pd

    from pruning.config.run_config import RunConfig
    from pruning.store.publish import publish_run

    uniform = RunConfig.from_dict({"model": {"name": "synthetic-6-blocks"}, "label": "uniform, newest",
                                   "pruning": {"method": "wanda", "sparsity": 0.6}, "allocation": {"strategy": "uniform"}})
    publish_run(uniform, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128,
                                                              "n_windows": 4, "total_windows": 4, "ppl": 50.0}])},
                created_at="2099-01-01T00:00:00+00:00")  # the newest run, whatever the clock
    from pruning.store import list_runs

    assert list_runs()["run_id"].iloc[0] == uniform.run_id
    at = open_page("spectra")
    assert at.session_state["spectra_runs"] in ([full_store["four"]], [full_store["six"]])
    assert plotly_specs(at), "no chart drawn"
    assert not [i.value for i in at.info if "have no spectra" in i.value]
