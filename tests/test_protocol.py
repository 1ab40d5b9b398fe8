"""Evaluation protocols (pruning.evaluation.protocol): which values may share a grid cell, an ε curve or a table."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pruning.app_support.grid import build_grid, default_protocol, epsilon_options, protocol_options
from pruning.app_support.grid_plots import epsilon_curve
from pruning.evaluation.protocol import (
    PUBLISHED,
    add_ppl_protocol,
    infer_text_digests,
    is_budgeted,
    ppl_protocol_key,
    ppl_protocol_label,
    zeroshot_protocol_key,
    zeroshot_protocol_label,
)

FULL = dict(dataset="wiki", text_digest="0cc60813547efec8", seqlen=2048, n_windows=175, total_windows=175,
            n_tokens=358225)
SMOKE = dict(dataset="wiki", text_digest="0cc60813547efec8", seqlen=8, n_windows=1, total_windows=44778, n_tokens=8)


def test_keys_and_labels_of_a_full_a_budgeted_and_a_published_value() -> None:
    assert ppl_protocol_key(**FULL) == "wiki|0cc60813547efec8|2048|175/175|358225"
    assert ppl_protocol_label(**FULL) == "full: 175 × 2048 tokens (358,225 scored), text 0cc60813"
    assert ppl_protocol_label(**SMOKE) == "budgeted: 1 of 44,778 windows × 8 tokens, text 0cc60813"
    assert is_budgeted(1, 44778) and not is_budgeted(175, 175) and not is_budgeted(None, None)
    published = dict(dataset="wikitext2", text_digest=None, seqlen=None, n_windows=None, total_windows=None,
                     n_tokens=None)
    assert ppl_protocol_key(**published) == f"wikitext2|{PUBLISHED}"
    assert ppl_protocol_label(**published) == PUBLISHED


@pytest.mark.parametrize("change", [
    {"text_digest": "ffffffffffffffff"},   # another text of the same length
    {"seqlen": 1024, "n_windows": 350, "total_windows": 350},  # other windows
    {"n_windows": 16},                     # a window budget
    {"dataset": "lee"},
])
def test_any_part_of_the_protocol_changes_the_key(change) -> None:
    assert ppl_protocol_key(**{**FULL, **change}) != ppl_protocol_key(**FULL)


def test_a_missing_digest_is_inferred_only_where_the_rest_of_the_protocol_pins_one_text() -> None:
    rows = pd.DataFrame([
        {**FULL},
        {**FULL, "text_digest": None},                                   # same counts: same text
        {**FULL, "text_digest": None, "n_tokens": 356178, "n_windows": 174, "total_windows": 174},  # older text
        {**SMOKE}, {**SMOKE, "text_digest": "ffffffffffffffff"}, {**SMOKE, "text_digest": None},  # ambiguous
    ])
    digests = infer_text_digests(rows).tolist()
    assert digests[:2] == ["0cc60813547efec8"] * 2
    assert digests[2] is None or (isinstance(digests[2], float) and math.isnan(digests[2]))
    assert pd.isna(digests[5])  # two known digests share those counts: left missing, its own protocol
    keyed = add_ppl_protocol(rows)
    assert keyed["protocol"].iloc[0] == keyed["protocol"].iloc[1] != keyed["protocol"].iloc[2]
    assert keyed["budgeted"].tolist() == [False, False, False, True, True, True]


def test_zeroshot_protocol_separates_limit_shots_and_harness() -> None:
    base = zeroshot_protocol_key("boolq", None, 0, "0.4.13")
    assert base == "boolq|limit=all|shots=0|harness=0.4.13"
    assert len({base, zeroshot_protocol_key("boolq", 20, 0, "0.4.13"), zeroshot_protocol_key("boolq", None, 5, "0.4.13"),
                zeroshot_protocol_key("boolq", None, 0, "0.3")}) == 4
    assert zeroshot_protocol_label(20, 0, "0.4.13") == "0-shot, limit 20 (budgeted), lm-eval 0.4.13"


def _cells() -> pd.DataFrame:
    """Wanda / 70 % / `all` values: an ε sweep on the full protocol, one smoke run at ε 0.2."""
    base = dict(kind="run", model="m", method="wanda", preset="all", preset_raw="all", sparsity=0.7,
                is_baseline=False, strategy="linear", metric="alpha_peak")
    rows = [{**base, **FULL, "run_id": f"r{i}", "epsilon": e, "ppl": p}
            for i, (e, p) in enumerate([(0.1, 450.0), (0.2, 452.0), (0.3, 405.0)])]
    rows.append({**base, **SMOKE, "run_id": "smoke", "epsilon": 0.2, "ppl": 1837.0})
    rows.append({**base, **FULL, "run_id": "u", "strategy": "uniform", "preset": None, "epsilon": None, "ppl": 829.0})
    return add_ppl_protocol(pd.DataFrame(rows))


def test_grid_shows_the_full_protocol_unless_another_is_chosen() -> None:
    cells = _cells()
    full, smoke = ppl_protocol_key(**FULL), ppl_protocol_key(**SMOKE)
    assert protocol_options(cells, model="m") == [full, smoke]  # the budgeted one last, even with ...
    assert default_protocol(cells, model="m") == full
    grid = build_grid(cells, model="m", sparsity=0.7)
    assert grid.value("Wanda", "all") == 405.0 and int(grid.count.loc["Wanda", "all"]) == 3
    assert "smoke" not in set(grid.detail["run_id"])
    assert epsilon_options(cells, model="m") == [0.1, 0.2, 0.3]
    at_02 = build_grid(cells, model="m", sparsity=0.7, epsilon=0.2)
    assert at_02.value("Wanda", "all") == 452.0  # not the smoke run's value at the same ε
    chosen = build_grid(cells, model="m", sparsity=0.7, protocol=smoke)
    assert chosen.value("Wanda", "all") == 1837.0 and chosen.columns == ["all"]
    # ... more values: the team's full protocol wins over a budgeted one that holds more runs
    many_smoke = pd.concat([cells] + [cells[cells["run_id"] == "smoke"].assign(run_id=f"s{i}") for i in range(5)])
    assert default_protocol(many_smoke, model="m") == full


def test_epsilon_curve_refuses_two_protocols() -> None:
    cells = _cells()
    wanda_all = cells[cells["strategy"] == "linear"]
    with pytest.raises(ValueError, match="2 evaluation protocols"):
        epsilon_curve(wanda_all)
    figure = epsilon_curve(wanda_all[~wanda_all["budgeted"]])
    assert list(figure.data[0].y) == [450.0, 452.0, 405.0]


def test_short_labels_for_table_cells() -> None:
    from pruning.evaluation.protocol import ppl_protocol_short

    assert ppl_protocol_short(2048, 175, 175) == "full 175×2048"
    assert ppl_protocol_short(8, 1, 44778) == "budgeted 1/44,778×8"
    assert ppl_protocol_short(None, None, None) == PUBLISHED
