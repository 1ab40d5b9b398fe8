"""The meeting report (pruning.app_support.report, `python -m pruning report`, pages/report.py) on a
copy of the shipped store: the grid's numbers as searchable text, nothing fetched from outside,
plotly.js inlined exactly once, user text escaped, bad input named."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
from test_app_pages import fill_with_notes, publish_synthetic_run

from pruning.app_support.formatting import format_ppl
from pruning.app_support.grid import build_grid, dense_perplexity
from pruning.calibration.protocol import DEFAULT_CALIBRATION, by_calibration
from pruning.errors import PruningLabError

HOSTILE = "<script>alert(1)</script>"
#: shipped SmolLM2 runs: Wanda QKVout at 50 % and 70 %, Wanda all by hessian_alpha at 70 %
RUNS = ["wanda-e69c522287e9", "wanda-ce230e9e0466", "wanda-eaa4312dbf80"]


def fake_eigenvalues(run_id: str, name: str, source: str) -> np.ndarray | None:
    """A Pareto-like weight spectrum (no model load in unit tests); no Hessian spectrum."""
    return np.sort(np.random.default_rng(0).pareto(3.0, 500) + 0.1) if source == "weight" else None


def without_scripts(document: str) -> str:
    """The report's markup with every <script> body removed (what a reader sees as text)."""
    return re.sub(r"<script\b[^>]*>.*?</script>", "", document, flags=re.S | re.I)


@pytest.fixture()
def shipped(data_dir: Path) -> Path:
    """A temporary copy of the shipped store (data/store)."""
    fill_with_notes(data_dir)
    return data_dir


@pytest.fixture()
def report(shipped: Path) -> str:
    from pruning.app_support.report import build_report

    return build_report(RUNS, eigenvalues=fake_eigenvalues)


def test_report_shows_every_grid_number_as_text(report):
    from pruning.store import queries

    text = without_scripts(report)
    cells = queries.perplexity_cells()
    mine = cells[cells["run_id"].isin(RUNS) & (cells["dataset"] == "wiki")]
    grids = mine.groupby(["model", "sparsity", "protocol"]).size().index
    assert len(grids) == 2  # 50 % and 70 %, one protocol
    for model, sparsity, protocol in grids:
        dense = dense_perplexity(queries.perplexity_cells(model=model, stage="dense"), model, "wiki", protocol)
        # the chosen runs' calibration only (the allocation study's wiki:train runs are another grid)
        grid = build_grid(by_calibration(cells, DEFAULT_CALIBRATION), model=model, sparsity=sparsity, dataset="wiki",
                          protocol=protocol, dense=dense)
        assert grid.baseline == "uniform" and grid.columns[0] == "dense"  # the page's baseline and dense columns
        filled = [(r, c) for r in grid.rows for c in grid.columns if grid.count.loc[r, c] > 0]
        assert len(filled) > len(RUNS)  # the whole grid, not only the chosen runs' cells
        for r, c in filled:
            assert html.escape(format_ppl(grid.best.loc[r, c])) in text, (r, c)
            # value, ± spread, Δ % to the baseline, count: each a part that keeps to one line
            for part in grid.text.loc[r, c].replace(" ± ", "<br>± ").split("<br>"):
                assert f'<span class="nw">{html.escape(part)}</span>' in text, (r, c, part)
        assert html.escape(grid.detail["protocol_label"].iloc[0]) in text
    # the chosen runs' cells are outlined and named with their run label, in the wiki grids and in lee's:
    # every text the runs were read on has its grid (issue 29: lee was missing)
    assert text.count('class="mark"') == 6
    assert "Wanda / QKVout (444.89)" in text
    assert text.index("smollm2-135m · 70% · wiki</h3>") < text.index("smollm2-135m · 70% · lee</h3>")


def test_report_keeps_each_calibration_in_a_grid_of_its_own(shipped):
    """A grid run (wiki calib split) and an allocation-study run (wiki:train) at the same sparsity and
    protocol: two grids, each naming its calibration, and the study's ATP column only in its own."""
    from pruning.app_support.report import build_report
    from pruning.store import queries

    cells = queries.perplexity_cells(model="smollm2-135m", sparsity=0.7)
    study = cells[(cells["strategy"] == "depth") & (cells["method"] == "wanda") & (cells["dataset"] == "wiki")]
    runs = [RUNS[1], study["run_id"].iloc[0]]
    text = without_scripts(build_report(runs, ["grid"], eigenvalues=fake_eigenvalues))
    first = text.index("calibration wiki · 128 × 2048")
    second = text.index("calibration wiki:train · 128 × 2048")
    lee = text.index("· lee</h3>")  # then the same two grids on lee
    assert first < second < lee
    assert "ATP" in text[second:lee] and "ATP" not in text[first:second]
    assert "QKVout" in text[first:second] and "QKVout" not in text[second:lee]
    zeroshot = without_scripts(build_report(runs, ["zeroshot"], eigenvalues=fake_eigenvalues))
    assert zeroshot.count("zero-shot acc, 0-shot, every example, lm-eval 0.4.13, calibration wiki · 128 × 2048") == 1
    assert zeroshot.count("zero-shot acc, 0-shot, every example, lm-eval 0.4.13, calibration wiki:train · 128 × 2048") == 1


def test_report_states_protocols_run_labels_and_provenance(report):
    from pruning.app_support.formatting import run_label
    from pruning.store import queries

    text = without_scripts(report)
    for section in ("Perplexity grid", "Spectra", "Compare", "Zero-shot accuracy"):
        assert f"<h2>{section}</h2>" in text
    assert text.count('class="protocol"') >= 5  # two grids, spectra, compare, zero-shot
    assert "0-shot, every example, lm-eval" in text
    rows = queries.list_runs().set_index("run_id")
    for run_id in RUNS:
        assert f"<th>{run_id}</th>" in text
        assert html.escape(run_label(rows.loc[run_id].to_dict() | {"run_id": run_id})) in text
        assert f"config of <code>{run_id}</code>" in text
    assert re.search(r"catalog generation \d+ · \d+ bundles · version [0-9a-f]{10}", text)
    assert re.search(r"commit [0-9a-f]{10}|no git commit", text)
    # 2 grids on wiki and the same 2 on lee, metric, ESD, sparsity; no study chart (no study run chosen)
    assert report.count("Plotly.newPlot") == report.count('class="plotly-graph-div"') == 7


def test_report_says_the_store_holds_no_eigenvalues_when_it_has_none(shipped):
    """ESDs come from the store's spectra sets (no model, no machine-local cache): the note says so."""
    from pruning.app_support.report import build_report

    text = without_scripts(build_report(RUNS[:1], ["spectra"], eigenvalues=lambda *_: None))
    assert "No eigenvalues of the weight spectrum in the results store" in text and "spectra cache" not in text


def test_report_is_self_contained(report):
    from plotly.offline import get_plotlyjs

    bundle = get_plotlyjs()
    assert report.count(bundle) == 1
    assert report.count("* plotly.js v") == 1
    rest = report.replace(bundle, "")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", rest, flags=re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", rest, flags=re.I)
    assert not re.search(r"<link\b|@import|url\(", rest, flags=re.I)
    assert "cdn" not in rest.lower()
    assert report.startswith("<!DOCTYPE html>")


def test_report_escapes_user_text(shipped):
    from pruning.app_support.report import build_report
    from pruning.store import add_note

    run_id = publish_synthetic_run(4, label=HOSTILE)
    add_note(run_id, f"looks fine {HOSTILE} & more")
    document = build_report([run_id, RUNS[0]], title=f"Review {HOSTILE}", eigenvalues=fake_eigenvalues)
    assert HOSTILE not in document
    assert "<script>alert" not in document
    escaped = html.escape(HOSTILE)
    assert f"<title>Review {escaped}</title>" in document
    assert f"looks fine {escaped} &amp; more" in document  # the note, in the runs table
    assert f"<td>{escaped}</td>" in document  # the run's own label


@pytest.mark.parametrize(
    ("runs", "views", "named"),
    [
        (["wanda-000000000000"], ["grid"], "wanda-000000000000"),
        ([RUNS[0], "no-such-run"], ["grid"], "no-such-run"),
        ([RUNS[0]], ["grid", "heatmaps"], "heatmaps"),
        ([], ["grid"], "runs: none chosen"),
        ([RUNS[0]], [], "views: none chosen"),
    ],
)
def test_report_bad_input_names_the_value(shipped, runs, views, named):
    from pruning.app_support.report import build_report

    with pytest.raises(PruningLabError, match=re.escape(named)):
        build_report(runs, views, eigenvalues=fake_eigenvalues)


def test_report_cli_writes_the_file_and_rejects_bad_values(shipped, tmp_path, capsys):
    from pruning.cli import main

    out = tmp_path / "minutes" / "report.html"
    assert main(["report", "--runs", RUNS[0], RUNS[1], "--views", "grid,compare",
                 "--out", str(out)]) == 0
    document = out.read_text(encoding="utf-8")
    assert "<h2>Perplexity grid</h2>" in document and "<h2>Spectra</h2>" not in document
    assert out.stat().st_size > 4_000_000  # plotly.js inside
    assert main(["report", "--runs", RUNS[0], "--views", "grid,plots", "--out", str(out)]) == 2
    assert "'plots' unknown" in capsys.readouterr().err
    assert main(["report", "--runs", "nope-123", "--out", str(out)]) == 2
    assert "'nope-123' not in the store" in capsys.readouterr().err
    assert main(["report", "--runs", RUNS[0], "--out", str(tmp_path / "report.pdf")]) == 2


def test_report_page_offers_a_download(shipped):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "pages" / "report.py"), default_timeout=120)
    at.session_state["sb_runs"] = RUNS[:2]
    at.session_state["report_view_spectra"] = False  # no model load for the ESD here
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Meeting report"
    assert at.multiselect(key="report_runs").value == RUNS[:2]  # the sidebar's runs by default
    assert not at.get("download_button")
    at.button(key="report_build").click().run()
    assert not at.exception, [e.value for e in at.exception]
    buttons = at.get("download_button")
    assert len(buttons) == 1
    assert "Download report" in buttons[0].proto.label
    summary = at.container(key="report_summary").dataframe[0].value
    assert list(summary.index) == RUNS[:2]


def test_one_colour_per_run_in_every_chart():
    import pandas as pd

    from pruning.app_support.plots import metric_by_block, sparsity_overlay
    from pruning.app_support.colors import recolor, run_colors

    labels = [f"run {i}" for i in range(34)]
    colors = run_colors(labels)
    assert len(set(colors.values())) == 34  # no repeat after 8 or 10 runs
    two = labels[:2]
    allocation = {label: pd.DataFrame({"block": [0, 1], "numel": [4, 4], "sparsity_target": [0.5, 0.6 + i / 10]})
                  for i, label in enumerate(two)}
    spectra = pd.DataFrame([{"series": label, "block": b, "matrix_type": t, "alpha": 2.0 + b + i}
                            for i, label in enumerate(reversed(two)) for b in (0, 1) for t in ("q", "k")])
    for fig in (recolor(sparsity_overlay(allocation), colors), recolor(metric_by_block(spectra, "alpha"), colors)):
        drawn = {(trace.name, trace.line.color) for trace in fig.data}
        assert drawn == {(label, colors[label]) for label in two}  # the same run, the same colour, in both


def test_cli_builds_without_the_app_libraries():
    """The engine's CLI runs on GPU machines without plotly/streamlit: registering the `report`
    command must not import them (it did, and every command failed there), and its view list is
    the report's."""
    import subprocess
    import sys

    code = ("import sys; from pruning.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('plotly', 'streamlit') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
    from pruning.app_support.report import DEFAULT_TITLE, VIEWS
    from pruning.cli import report as cli_report

    assert cli_report.VIEWS == VIEWS and cli_report.DEFAULT_TITLE == DEFAULT_TITLE


def test_report_study_view_is_the_study_page_of_the_chosen_runs_cells(shipped):
    """Issue 29: the report can include the Study page: for a chosen study run, its cell's families with
    the numbers of `scripts/allocation_study.py table`, the verdict and the sparsity per block."""
    from pruning.app_support.report import build_report
    from pruning.study import study_runs, summarize

    runs = study_runs()
    atp = runs[(runs["family"] == "depth") & (runs["phase"] == "final") & (runs["method"] == "wanda")
               & (runs["sparsity"] == 0.7)].sort_values("seed")["run_id"].iloc[0]
    document = build_report([atp], ["study"], eigenvalues=fake_eigenvalues)
    text = without_scripts(document)
    assert "<h2>Allocation study</h2>" in text and "smollm2-135m · wanda · 70%</h3>" in text
    summary = summarize(runs).set_index(["method", "sparsity", "family"])
    for family in ("uniform", "owl", "alpha_peak", "dlp", "depth", "hessian_alpha", "ours"):
        row = summary.loc[("wanda", 0.7, family)]
        assert f"{row['wiki_mean']:.2f} ± {row['wiki_std']:.2f}" in text or f"{row['wiki_mean']:,.0f} ± " in text, family
    assert "ours does not beat every rival" in text and "ATP (rising with depth)" in text
    assert '<td class="mark">316.24 ± 6.28</td>' in text  # the best wiki test mean, outlined
    assert document.count("Plotly.newPlot") == 1 and "sparsity per block, every family" in document
    none = without_scripts(build_report([RUNS[0]], ["study"], eigenvalues=fake_eigenvalues))
    assert "None of the chosen runs is a final run of the allocation study" in none


def test_report_esd_opens_on_a_matrix_whose_fits_are_all_sound(shipped):
    """Issue 29: the report's ESD opened on layers.0.mlp.up_proj, whose weight fit weightwatcher flags
    (α 22.05 on 9 tail eigenvalues) while its Hessian fit is sound; panel titles are short."""
    from pruning.app_support.report import build_report
    from pruning.app_support.spectra import fit_warning
    from pruning.store import queries

    run = "wanda-6473769a5d74"  # ours, with weight and Hessian spectra
    spectra = queries.run_table(run, "spectra")
    flagged = {n for n, a, t in zip(spectra["name"], spectra["alpha"], spectra["n_tail"]) if fit_warning(a, t)}
    assert "model.layers.0.mlp.up_proj" in flagged
    text = without_scripts(build_report([run], ["spectra"], eigenvalues=fake_eigenvalues))
    shown = re.search(r"<h3>ESD of ([^ <]+) ·", text).group(1)
    assert shown not in flagged and shown == "model.layers.1.mlp.up_proj"
