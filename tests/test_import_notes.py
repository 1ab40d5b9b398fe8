"""The notes importer reads every cell of seed/research-notes.txt exactly, with provenance."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pruning.importers.notes import import_notes, parse_notes
from pruning.store import ImportFormatError, attention_stats, list_runs, perplexity_cells, zeroshot_scores
from pruning.store.layout import latest_attempts, store_root

NOTES = Path(__file__).resolve().parents[1] / "data" / "reference" / "research-notes.txt"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# (model, method, preset_raw, epsilon, is_baseline, ppl, source_line); method None = unlabeled cell
EXPECTED = [
    ("LLaMA-7B", "magnitude", None, None, False, 192.69, 5),
    ("LLaMA-7B", "wanda", None, None, False, 22.77, 6),
    ("LLaMA-7B", "wanda", None, 0.2, False, 22.24, 6),
    ("LLaMA-7B", "wanda", None, 0.21, False, 22.13, 6),
    ("LLaMA-7B", "wanda", "GT", None, True, 24.0, 6),
    ("LLaMA-7B", "sparsegpt", None, None, False, 19.67, 7),
    ("LLaMA-7B", "sparsegpt", None, 0.2, False, 18.49, 7),
    ("LLaMA-7B", "sparsegpt", "GT", None, True, 19.326, 7),
    ("LLaMA-7B", "sparsegpt", None, 0.162, False, 18.72, 7),
    ("LLaMA-2-7B", "wanda", None, 0.25, False, 30.1, 10),
    ("LLaMA-2-7B", "wanda", "GT", None, True, 32.06, 10),
    ("LLaMA-2-7B", "wanda", "split", 0.3, False, 29.62, 10),
    ("LLaMA-2-7B", "magnitude", None, 0.02, False, 2845.0, 11),
    ("LLaMA-2-7B", "magnitude", "GT", None, True, math.nan, 11),
    ("LLaMA-2-7B", "sparsegpt", None, 0.2, False, 20.99, 12),
    ("LLaMA-2-7B", "sparsegpt", "GT", None, True, 21.51, 12),
    ("LLaMA-7B", "magnitude", "QKV output", None, False, 198.12, 16),
    ("LLaMA-7B", "wanda", "QKV output", None, False, 22.01, 17),
    ("LLaMA-7B", "wanda", "OUT", None, False, 51.33, 17),
    ("LLaMA-7B", "wanda", "Q OUT GATE", None, False, 26.04, 17),
    ("LLaMA-7B", "wanda", "Gate", None, False, 108.09, 17),
    ("LLaMA-7B", "wanda", "QKVoutg", None, False, 22.21, 17),
    ("LLaMA-7B", "magnitude", "QKVout + split", None, False, 228.5, 17),
    ("LLaMA-7B", "sparsegpt", "QKV output", None, False, 18.75, 18),
    ("LLaMA-7B", "wanda", "QKVout + split", None, False, 21.69, 18),
    ("LLaMA-7B", "wanda", "GT", 0.22, True, 23.52, 18),
    ("LLaMA-7B", None, "QKVout + split", None, False, 21.47, 18),
    ("LLaMA-7B", "sparsegpt", "QKVout + split", None, False, 17.76, 19),
    ("LLaMA-3-8B", "magnitude", "GT", None, True, 219402.0, 47),
    ("LLaMA-3-8B", "magnitude", "Q out", None, False, 54888.0, 47),
    ("LLaMA-3-8B", "wanda", "GT", None, True, 106.56, 48),
    ("LLaMA-3-8B", "wanda", "QKVout", None, False, 110.9, 48),
    ("LLaMA-3-8B", "wanda", "Q out gate split", None, False, 71.21, 48),
    ("LLaMA-3-8B", "sparsegpt", "GT", None, True, 37.26, 49),
    ("LLaMA-3-8B", "sparsegpt", "Q out Gate", None, False, 31.79, 49),
    ("LLaMA-2-7B", "magnitude", "GT", None, True, math.nan, 54),
    ("LLaMA-2-7B", "wanda", "QK out", None, False, 29.89, 55),
    ("LLaMA-2-7B", "wanda", "QK out split", None, False, 30.0, 55),
    ("LLaMA-2-7B", "wanda", "QK out split 7b", None, False, 29.39, 55),
    ("LLaMA-2-7B", "sparsegpt", "GT", None, True, 21.51, 56),
]


@pytest.fixture(scope="module")
def notes_store(tmp_path_factory: pytest.TempPathFactory):
    """One import shared by the read-only tests of this module (its own PRUNING_LAB_DATA)."""
    path = tmp_path_factory.mktemp("notes-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PRUNING_LAB_DATA", str(path))
        result = import_notes(NOTES)
        yield path, result


@pytest.fixture()
def imported(notes_store, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PRUNING_LAB_DATA", str(notes_store[0]))
    return notes_store[1], perplexity_cells()


def _match(cells, model, method, preset_raw, line):
    sel = cells[(cells["model"] == model) & (cells["source_line"] == line)]
    sel = sel[sel["method"].isna()] if method is None else sel[sel["method"] == method]
    sel = sel[sel["preset_raw"].isna()] if preset_raw is None else sel[sel["preset_raw"] == preset_raw]
    return sel


def test_every_perplexity_cell_is_read(imported) -> None:
    _, cells = imported
    assert len(cells) == 57  # 9 + 7 (blocks 1-2) + 19 (block 3) + 13 (block 4) + 9 (block 5)
    assert (cells["sparsity"] == 0.7).all() and cells["sparsity_assumed"].all()
    assert (cells["kind"] == "reference").all() and cells["source_file"].str.endswith("research-notes.txt").all()
    assert cells["ppl"].isna().sum() == 2  # the two "nan" GT cells are kept, not dropped


@pytest.mark.parametrize("model,method,preset_raw,epsilon,baseline,ppl,line", EXPECTED)
def test_cell_values(imported, model, method, preset_raw, epsilon, baseline, ppl, line) -> None:
    _, cells = imported
    sel = _match(cells, model, method, preset_raw, line)
    if epsilon is None:
        sel = sel[sel["epsilon"].isna()]
    else:
        sel = sel[(sel["epsilon"] - epsilon).abs() < 1e-12]
    sel = sel[sel["ppl"].isna()] if math.isnan(ppl) else sel[sel["ppl"] == ppl]
    assert len(sel) == 1, f"{model} {method} {preset_raw} eps={epsilon} ppl={ppl} line {line}"
    assert bool(sel["is_baseline"].iloc[0]) == baseline
    assert isinstance(sel["raw_text"].iloc[0], str) and sel["raw_text"].iloc[0]


def test_issue_examples_and_canonical_presets(imported) -> None:
    _, cells = imported
    one = lambda **kw: cells.loc[(cells[list(kw)] == list(kw.values())).all(axis=1)]  # noqa: E731
    assert one(model="LLaMA-7B", method="wanda", preset="QKVout", is_baseline=False)["ppl"].tolist() == [22.01]
    assert one(model="LLaMA-7B", method="sparsegpt", preset="QKVout + split")["ppl"].tolist() == [17.76]
    assert one(model="LLaMA-3-8B", method="magnitude", is_baseline=True)["ppl"].tolist() == [219402.0]
    gt2 = one(model="LLaMA-2-7B", method="magnitude", is_baseline=True)
    assert len(gt2) == 2 and gt2["ppl"].isna().all()
    # header typos map to canonical presets; raw header text is kept
    assert one(model="LLaMA-7B", method="magnitude", preset_raw="QKV output")["preset"].tolist() == ["QKVout"]
    assert one(model="LLaMA-3-8B", method="wanda", preset_raw="Q out Gate")["preset"].tolist() == ["Q OUT GATE"]
    assert (cells.loc[cells["is_baseline"], "preset"] == "all").all()
    # "split" = all seven types with attention/MLP sub-blocks separately: preset 'split', raw kept
    split = one(model="LLaMA-2-7B", preset_raw="split")
    assert split["preset"].tolist() == ["split"] and split["ppl"].tolist() == [29.62]
    assert split["epsilon"].tolist() == [0.3]
    # the unlabeled trailing cell keeps its raw text and a note; 29.39 is Wanda with a note
    unl = cells[cells["method"].isna()]
    assert unl["raw_text"].tolist() == ["21.47 QKVout + split"] and "not written" in unl["note"].iloc[0]
    q7b = one(model="LLaMA-2-7B", preset_raw="QK out split 7b")
    assert q7b["method"].tolist() == ["wanda"] and q7b["preset"].tolist() == ["QK out split"] and "inferred" in q7b["note"].iloc[0]


def test_zeroshot_and_attention(imported) -> None:
    zs = zeroshot_scores()
    acc = zs[zs["metric"] == "acc"]
    assert sorted(acc["task"]) == sorted(["arc_easy", "boolq", "arc_challenge", "rte", "hellaswag", "openbookqa", "winogrande"])
    assert round(acc["value"].mean(), 4) == 0.4472
    row = zs[(zs["task"] == "hellaswag") & (zs["metric"] == "acc_norm")].iloc[0]
    assert row["value"] == pytest.approx(0.5033857797251543, abs=0) and row["stderr"] == pytest.approx(0.0049896670093726525)
    assert row["source_line"] == 28 and row["model"] == "LLaMA-7B" and row["preset"] == "QKVout + split"
    assert zs.loc[zs["task"] == "boolq", "task_version"].tolist() == ["1"]
    runs = list_runs(kind="reference")
    zrow = runs[runs["zeroshot_mean"].notna()]
    assert len(zrow) == 1 and zrow["zeroshot_mean"].iloc[0] == pytest.approx(0.4472, abs=5e-5)
    att = attention_stats()
    val = {(r.model, r.statistic): r.value for r in att.itertuples()}
    assert val[("LLaMA-7B", "v_entropy")] == 7.6593 and val[("LLaMA-2-7B", "v_entropy")] == 7.6507
    assert val[("LLaMA-7B", "qk_entropy")] == 3.9172 and val[("LLaMA-2-7B", "qk_entropy")] == 4.3091
    assert val[("LLaMA-7B", "v_rank_ratio")] == 1.0 and len(att) == 6


def test_reimport_is_a_noop(imported) -> None:
    again = import_notes(NOTES)
    assert again.skipped
    assert len(perplexity_cells()) == 57


@pytest.mark.parametrize("name,line,needle", [
    ("notes_malformed.txt", 4, "eighteen"),
    ("notes_bad_letter.txt", 7, "'x'"),
    ("notes_unknown_method.txt", 3, "'obs'"),
])
def test_bad_notes_are_reported_and_nothing_is_imported(data_dir: Path, name: str, line: int, needle: str) -> None:
    with pytest.raises(ImportFormatError) as err:
        import_notes(FIXTURES / name)
    msg = str(err.value)
    assert f"{name}:{line}:" in msg and needle in msg
    assert latest_attempts(store_root()) == {}
    assert list_runs().empty and perplexity_cells().empty


def test_parse_counts_without_store() -> None:
    parser = parse_notes(NOTES)
    assert len(parser.cells) == 57 and len(parser.zeroshot) == 1 and len(parser.attention) == 6
