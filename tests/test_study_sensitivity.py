"""Per-block sensitivity of the allocation study (issue 28, pruning.study.sensitivity): the sweep that
probes every block, the profiles read back from a synthetic store, the metrics per block from the study's
own runs, and Spearman correlations on designed ranks where a wrong variant (ppl instead of the log ratio
to dense, the wrong sign convention, metrics from the wrong model) gives another answer."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pruning.config.run_config import RunConfig
from pruning.store import publish_run
from pruning.study import final_base
from pruning.study.sensitivity import (
    METRICS, SENSITIVITY_TAG, block_metrics, correlations, sensitivity_profiles, sensitivity_report,
    sensitivity_spec, write_sensitivity,
)

BLOCKS = 6


def test_sweep_probes_every_block_once_per_method_beside_the_dense_run(tmp_path: Path) -> None:
    spec = sensitivity_spec("smollm2-135m", 30)
    assert spec["base"]["pruning"] == {"method": "dense", "sparsity": 0.0} and spec["base"]["tags"] == [SENSITIVITY_TAG]
    assert spec["base"]["evaluation"]["perplexity"] == ["wiki:validation"]  # never test or lee
    assert spec["base"]["calibration"]["dataset"] == "wiki:train"
    probes = {(o["pruning.method"], o["allocation.probe_block"]) for o in spec["include"]}
    assert probes == {(m, b) for m in ("wanda", "sparsegpt") for b in range(30)} and len(spec["include"]) == 60
    assert {o["pruning.sparsity"] for o in spec["include"]} == {0.8}
    configs = write_sensitivity("smollm2-135m", tmp_path / "s.yaml", layers=30, sparsity=0.9)
    assert len(configs) == 61 and len({c.run_id for c in configs}) == 61
    with pytest.raises(ValueError, match="sparsity: 1.0 is invalid"):
        sensitivity_spec("m", 4, 1.0)


def _ppl(value: float, stage: str = "pruned") -> dict[str, pd.DataFrame]:
    return {"perplexity": pd.DataFrame([{"stage": stage, "dataset": "wiki:validation", "text_digest": "d-val",
                                         "seqlen": 2048, "limit_windows": None, "n_windows": 35, "total_windows": 35,
                                         "n_tokens": 71_645, "ppl": value}])}


#: designed so every metric has a known rank correlation with the sensitivity
SENSITIVITY = [2.0, 1.2, 0.9, 0.5, 0.3, 0.1]  # log ratio per block: the first block most sensitive
DENSE = 20.0


def _publish_probes(model: str = "tiny-m") -> None:
    spec = sensitivity_spec(model, BLOCKS)
    base = RunConfig.from_dict(spec["base"])
    publish_run(base, tables=_ppl(DENSE, stage="dense"))
    for over in spec["include"]:
        config = base.with_overrides(over)
        block = over["allocation.probe_block"]
        # SparseGPT is half as sensitive; ppl = dense * exp(sensitivity)
        s = SENSITIVITY[block] * (1.0 if over["pruning.method"] == "wanda" else 0.5)
        publish_run(config, tables=_ppl(DENSE * math.exp(s)))


def _spectra(block_alpha: list[float], hessian: list[float]) -> pd.DataFrame:
    rows = []
    for b in range(BLOCKS):
        for t in ("q", "k", "v", "o", "gate", "up", "down"):
            for source, a in (("weight", block_alpha[b]), ("hessian", hessian[b])):
                rows.append({"model": "tiny-m", "block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}",
                             "source": source, "alpha": a, "alpha_peak": a + 1.0})
    return pd.DataFrame(rows)


def _allocation(scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"block": b, "matrix_type": t, "name": f"model.layers.{b}.{t}", "numel": 10, "score": scores[b],
                          "sparsity_target": 0.7, "sparsity_achieved": 0.7}
                         for b in range(BLOCKS) for t in ("q", "down")])


def _publish_study_runs() -> None:
    base = RunConfig.from_dict({**final_base("tiny-m"), "pruning": {"method": "wanda", "sparsity": 0.7}})
    ours = base.with_overrides({"allocation.strategy": "linear", "allocation.preset": "all",
                                "allocation.metric": "hessian_alpha", "allocation.metric_mix": "alpha_peak"})
    # weight α rises with depth (ranks like -sensitivity: agrees), Hessian α falls (disagrees)
    publish_run(ours, tables={"spectra": _spectra([2, 3, 4, 5, 6, 7], [9, 8, 7, 6, 5, 4]), **_ppl(300.0)})
    owl = base.with_overrides({"allocation.strategy": "owl"})
    publish_run(owl, tables={"allocation": _allocation([0.06, 0.05, 0.01, 0.04, 0.03, 0.02]), **_ppl(400.0)})
    dlp = base.with_overrides({"allocation.strategy": "dlp"})
    publish_run(dlp, tables={"allocation": _allocation([1, 2, 3, 4, 5, 6]), **_ppl(350.0)})


def test_profiles_are_log_ratios_to_the_dense_run(data_dir: Path) -> None:
    _publish_probes()
    profiles = sensitivity_profiles()
    assert len(profiles) == 2 * BLOCKS and set(profiles["method"]) == {"wanda", "sparsegpt"}
    wanda = profiles[profiles["method"] == "wanda"].set_index("block")
    assert wanda["sensitivity"].tolist() == pytest.approx(SENSITIVITY)
    assert wanda["dense_ppl"].eq(DENSE).all() and wanda.at[0, "ppl"] == pytest.approx(DENSE * math.exp(2.0))
    assert wanda["sparsity"].eq(0.8).all()


def test_metrics_per_block_and_their_rank_correlation(data_dir: Path) -> None:
    _publish_probes()
    _publish_study_runs()
    metrics = block_metrics("tiny-m")
    assert list(metrics.columns) == ["depth", "weight_alpha", "weight_alpha_peak", "hessian_alpha", "owl_ratio",
                                     "dlp_unimportance"]
    assert metrics["weight_alpha"].tolist() == [2, 3, 4, 5, 6, 7] and metrics["hessian_alpha"].tolist() == [9, 8, 7, 6, 5, 4]
    table = correlations(sensitivity_profiles(), {"tiny-m": metrics}).set_index(["method", "metric"])
    assert table.loc[("wanda", "depth"), "rho"] == pytest.approx(-1.0)  # later blocks less sensitive
    assert table.loc[("wanda", "depth"), "agrees"]  # ATP's slope has the right sign
    assert table.loc[("wanda", "hessian_alpha"), "rho"] == pytest.approx(1.0)
    assert not table.loc[("wanda", "hessian_alpha"), "agrees"]  # higher Hessian α on sensitive blocks: wrong way
    owl = np.corrcoef(pd.Series(SENSITIVITY).rank(), pd.Series([0.06, 0.05, 0.01, 0.04, 0.03, 0.02]).rank())[0, 1]
    assert table.loc[("wanda", "owl_ratio"), "rho"] == pytest.approx(owl) and 0 < owl < 1
    assert table.loc[("sparsegpt", "dlp_unimportance"), "rho"] == pytest.approx(-1.0)
    assert set(table["n"]) == {BLOCKS}
    report = sensitivity_report()
    assert "| tiny-m | wanda | -1.00 | -1.00 | -1.00 | +1.00 |" in report
    assert "| expected sign | | − | − | − | − | + | − |" in report
    assert "| tiny-m | wanda | 6 | 20.00 | 0: 147.8, 1: 66.4, 2: 49.2 |" in report


def test_a_model_without_study_runs_reads_its_metrics_from_its_proxy_runs(data_dir: Path) -> None:
    """Gemma3-270m had proxy runs (tag proxy-gemma) and no study run: its metrics come from those; a study
    run, once stored, takes precedence over them (its calibration is the study's)."""
    base = RunConfig.from_dict({**final_base("tiny-m"), "pruning": {"method": "wanda", "sparsity": 0.7},
                                "tags": ["proxy-gemma"]})
    ours = base.with_overrides({"allocation.strategy": "linear", "allocation.preset": "all",
                                "allocation.metric": "hessian_alpha", "allocation.metric_mix": "depth"})
    publish_run(ours, tables={"spectra": _spectra([7, 6, 5, 4, 3, 2], [1, 2, 3, 4, 5, 6]), **_ppl(300.0)})
    dlp = base.with_overrides({"allocation.strategy": "dlp"})
    publish_run(dlp, tables={"allocation": _allocation([6, 5, 4, 3, 2, 1]), **_ppl(350.0)})
    metrics = block_metrics("tiny-m")
    assert list(metrics.columns) == ["depth", "weight_alpha", "weight_alpha_peak", "hessian_alpha", "dlp_unimportance"]
    assert metrics["hessian_alpha"].tolist() == [1, 2, 3, 4, 5, 6] and metrics["dlp_unimportance"].tolist() == [6, 5, 4, 3, 2, 1]
    assert block_metrics("other-model").empty
    _publish_study_runs()
    assert block_metrics("tiny-m")["hessian_alpha"].tolist() == [9, 8, 7, 6, 5, 4]


def test_a_store_without_probes_has_no_profile(data_dir: Path) -> None:
    assert sensitivity_profiles().empty and sensitivity_report() == ""
    assert set(METRICS) >= {"depth", "hessian_alpha", "owl_ratio", "dlp_unimportance"}


def test_study_page_draws_the_measured_sensitivity_beside_the_scores(data_dir: Path) -> None:
    """The Study page's score chart opens with the measured profile of the cell's model and method, and
    the Spearman table of the cell's method follows it."""
    from streamlit.testing.v1 import AppTest

    _publish_probes()
    _publish_study_runs()
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    charts = [c.proto for c in at.get("plotly_chart")]
    import json

    scores = json.loads(charts[1].spec)
    titles = [a["text"] for a in scores["layout"]["annotations"]]
    assert titles[0] == "measured sensitivity, one block at 80%: log(ppl / dense)"
    first = scores["data"][0]
    from test_app_pages import decode

    assert decode(first["y"]) == pytest.approx(SENSITIVITY)
    rho = next(df.value for df in at.dataframe if "rho" in df.value.columns)
    assert rho.set_index("metric").at["depth", "rho"] == pytest.approx(-1.0)
