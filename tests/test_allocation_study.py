"""scripts/allocation_study.py (issue 16): the validation sweep, the knob choice on a synthetic store,
the final sweep and the study table's "beats by more than the seed spread" verdict."""

from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pruning.config.run_config import RunConfig
from pruning.config.presets import MATRIX_TYPES
from pruning.store import publish_run
from pruning.jobs.sweep import expand_sweep
import pruning.study as study

REPO = Path(__file__).resolve().parents[1]

MODEL = "smollm2-135m"
SPLIT = {"allocation.preset": "split", "allocation.metric": "hessian_alpha"}
MIXED = {"allocation.preset": "all", "allocation.metric": "hessian_alpha", "allocation.metric_mix": "alpha_peak"}
DEEP = {"allocation.preset": "all", "allocation.metric": "hessian_alpha", "allocation.metric_mix": "depth"}


def _validation_configs(tmp_path: Path) -> list[RunConfig]:
    out = tmp_path / "validation.yaml"
    study.write_validation(MODEL, out, layers=30)
    return expand_sweep(out)


def test_validation_sweep_is_the_132_candidates(tmp_path: Path) -> None:
    configs = _validation_configs(tmp_path)
    assert len(configs) == 132 and len({c.run_id for c in configs}) == 132
    assert Counter((c.pruning.method, c.pruning.sparsity) for c in configs) == {
        (m, s): 33 for m in ("wanda", "sparsegpt") for s in (0.6, 0.7)}
    for c in configs:  # the protocol: calibrate on wiki:train, score the whole validation split only
        assert (c.model.name, c.model.device) == (MODEL, "cuda")
        assert (c.calibration.dataset, c.calibration.nsamples, c.calibration.seqlen, c.calibration.seed) == ("wiki:train", 128, 2048, 0)
        ev = c.evaluation
        assert (ev.perplexity, ev.seqlen, ev.limit_windows, ev.batch_size, ev.zeroshot_tasks, ev.attention) == (
            ("wiki:validation",), 2048, None, 8, (), False)
        assert c.tags == ("allocation-study", "study-validation")
    cell = [c for c in configs if (c.pruning.method, c.pruning.sparsity) == ("sparsegpt", 0.7)]
    by_family = Counter(study.family_of(c) for c in cell)
    assert by_family == {"uniform": 1, "owl": 6, "alpha_peak": 3, "dlp": 4, "depth": 4, "hessian_alpha": 3, "ours": 12}
    # ATP: beta = f * min(2S, 2(1-S)) / (L-1); at S = 0.7, L = 30 that is f * 0.6 / 29 (not 2S = 1.4)
    betas = sorted(c.allocation.depth_beta for c in cell if c.allocation.strategy == "depth")
    assert betas == [0.005172, 0.010345, 0.015517, 0.02069]
    assert betas == [round(f * 0.6 / 29, 6) for f in (0.25, 0.5, 0.75, 1.0)]
    at_60 = sorted(c.allocation.depth_beta for c in configs if c.allocation.strategy == "depth" and c.pruning.sparsity == 0.6)
    assert at_60[-1] == 0.027586 and len(at_60) == 8  # 0.8 / 29, both methods
    assert {(c.allocation.owl_threshold_m, c.allocation.owl_lambda) for c in cell if c.allocation.strategy == "owl"} == {
        (m, lam) for m in (5.0, 7.0) for lam in (0.04, 0.08, 0.12)}
    assert sorted(c.allocation.dlp_alpha for c in cell if c.allocation.strategy == "dlp") == [0.05, 0.1, 0.15, 0.2]
    ours = [c.allocation for c in cell if study.family_of(c) == "ours"]
    split = [a for a in ours if a.granularity == "split"]
    assert all((a.metric, a.metric_mix, a.score_groups) == ("hessian_alpha", None, MATRIX_TYPES) for a in split)
    assert sorted(a.epsilon for a in split) == [0.1, 0.2, 0.3, 0.4]
    mixed = [a for a in ours if a.metric_mix == "alpha_peak"]  # Hessian alpha mixed with the weight alpha_peak
    assert all((a.preset, a.metrics, a.score_groups) == ("all", ("hessian_alpha", "alpha_peak"), MATRIX_TYPES)
               for a in mixed)
    assert sorted(a.epsilon for a in mixed) == [0.1, 0.2, 0.3, 0.4]
    deep = [a for a in ours if a.metric_mix == "depth"]  # Hessian alpha mixed with the block index
    assert all((a.preset, a.metrics, a.granularity) == ("all", ("hessian_alpha", "depth"), "block") for a in deep)
    assert sorted(a.epsilon for a in deep) == [0.1, 0.2, 0.3, 0.4] and len(ours) == len(split) + len(mixed) + len(deep)
    hess = [c.allocation for c in cell if study.family_of(c) == "hessian_alpha"]
    assert all((a.metric, a.metric_mix, a.granularity, a.score_groups) == ("hessian_alpha", None, "block", MATRIX_TYPES)
               for a in hess)
    alpha = [c.allocation for c in cell if study.family_of(c) == "alpha_peak"]
    assert sorted(a.epsilon for a in alpha) == [0.1, 0.2, 0.3] and all(a.metric == "alpha_peak" for a in alpha)


#: run ids of the ours-split candidates of the first validation batch (computed before the mixed
#: variant was added; the sweep dedupes by run id, so these must never change)
SPLIT_RUN_IDS = {
    ("wanda", 0.6, 0.1): "wanda-b572faa606ae", ("wanda", 0.7, 0.4): "wanda-39c69bc6a1e9",
    ("sparsegpt", 0.6, 0.3): "sparsegpt-63b22dd1636b", ("sparsegpt", 0.7, 0.1): "sparsegpt-e9b48dfc8c63",
}


def test_the_first_batch_keeps_its_run_ids() -> None:
    base = RunConfig.from_dict(study.validation_base(MODEL))
    ids = {(c.method, c.sparsity, c.family, c.knobs.get("allocation.epsilon"), c.variant.get("allocation.preset")):
           base.with_overrides(c.overrides).run_id for c in study.candidates(30)}
    for (method, sparsity, eps), run_id in SPLIT_RUN_IDS.items():
        assert ids[(method, sparsity, "ours", eps, "split")] == run_id
    assert len({base.with_overrides(c.overrides).run_id for c in study.candidates(30)}) == 132
    # the candidates of one variant, in the first batch's order, then the mixed ones, then depth's
    ours = [c for c in study.candidates(30) if (c.method, c.sparsity, c.family) == ("wanda", 0.6, "ours")]
    assert [(c.variant.get("allocation.metric_mix"), c.knobs["allocation.epsilon"]) for c in ours] == [
        (None, 0.1), (None, 0.2), (None, 0.3), (None, 0.4),
        ("alpha_peak", 0.1), ("alpha_peak", 0.2), ("alpha_peak", 0.3), ("alpha_peak", 0.4),
        ("depth", 0.1), ("depth", 0.2), ("depth", 0.3), ("depth", 0.4)]


def test_final_sweep_runs_a_chosen_mixed_variant(tmp_path: Path) -> None:
    choices = _choices(pick=5)  # ours: the mixed variant, eps 0.2 (other families: their last candidate)
    path = tmp_path / "choices.json"
    path.write_text(json.dumps(choices))
    configs = study.write_final(MODEL, path, tmp_path / "final.yaml")
    ours = [c.allocation for c in configs if study.family_of(c) == "ours"]
    assert len(ours) == 4 + 4 + 2  # seeds 1 + 3 per method, plus the lee-calibrated runs
    assert {(a.preset, a.metrics, a.epsilon) for a in ours} == {("all", ("hessian_alpha", "alpha_peak"), 0.2)}
    hess = [c.allocation for c in configs if study.family_of(c) == "hessian_alpha"]
    assert hess and all(a.metric_mix is None for a in hess)


def test_layers_come_from_config_json(tmp_path: Path) -> None:
    model_dir = tmp_path / "gemma-like"
    model_dir.mkdir()
    (model_dir / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 18}}))
    assert study.model_layers(str(model_dir)) == 18
    with pytest.raises(ValueError, match="contradicts"):
        study.model_layers(str(model_dir), 30)
    with pytest.raises(ValueError, match="--layers"):
        study.model_layers(str(tmp_path / "nowhere"))
    assert study.model_layers(str(tmp_path / "nowhere"), 30) == 30


# ---- choose on a synthetic store --------------------------------------------------------------

def _ppl_rows(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"stage": "pruned", "dataset": ds, "text_digest": f"d-{ds}", "seqlen": 2048,
                          "limit_windows": None, "n_windows": 35, "total_windows": 35, "n_tokens": 71_645, "ppl": v}
                         for ds, v in values.items()])


def _designed_ppl(cand: Any, index: int) -> tuple[float, float]:
    """(validation ppl, test ppl) of a candidate (index = its position in its family's grid).
    The test-split numbers would choose otherwise: a choice read from the test split fails."""
    val = 40.0 + index
    if (cand.method, cand.sparsity, cand.family) == ("wanda", 0.7, "owl"):
        val = [float("nan"), 30.0, 29.0, 31.0, 28.5, 33.0][index]  # NaN first: never wins; index 4 wins
    if (cand.method, cand.sparsity, cand.family) == ("wanda", 0.7, "dlp"):
        val = [30.0, 29.0, 29.0, 31.0][index]  # tie: the earlier (alpha 0.1) wins
    if (cand.method, cand.sparsity, cand.family) == ("sparsegpt", 0.6, "ours"):
        val = [25.0, 24.0, 22.0, 23.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 32.0, 33.0][index]  # split, eps 0.3 wins
    if (cand.method, cand.sparsity, cand.family) == ("wanda", 0.6, "ours"):
        val = [25.0, 24.0, 22.0, 23.0, 26.0, 21.0, 28.0, 29.0, 21.5, 30.0, 31.0, 32.0][index]  # mixed, eps 0.2 wins
    if (cand.method, cand.sparsity, cand.family) == ("sparsegpt", 0.7, "ours"):
        val = [25.0, 24.0, 22.0, 23.0, 26.0, 27.0, 28.0, 29.0, 30.0, 31.0, 20.0, 32.0][index]  # depth, eps 0.3 wins
    test = 100.0 - index  # on the test split the last knob always looks best
    return val, test


def _publish_validation(skip: set[int] = frozenset()) -> list[tuple[Any, RunConfig]]:
    base = RunConfig.from_dict(study.validation_base(MODEL))
    done, index, last = [], 0, None
    for i, cand in enumerate(study.candidates(30)):
        key = (cand.method, cand.sparsity, cand.family)
        index = index + 1 if key == last else 0
        last = key
        config = base.with_overrides(cand.overrides)
        done.append((cand, config))
        if i in skip:
            continue
        val, test = _designed_ppl(cand, index)
        publish_run(config, tables={"perplexity": _ppl_rows({"wiki:validation": val, "wiki": test})}, timings={"total": 60.0})
    return done


def _chosen(cells: list[Any], method: str, sparsity: float, family: str) -> dict[str, Any]:
    """The chosen candidate's variant settings and knobs."""
    cell = next(c for c in cells if (c.method, c.sparsity, c.family) == (method, sparsity, family))
    return {**cell.results[cell.chosen].candidate.variant, **cell.results[cell.chosen].candidate.knobs}


def test_choose_picks_the_lowest_validation_perplexity(data_dir: Path, tmp_path: Path) -> None:
    published = _publish_validation()
    # an untagged run with the same knobs as a loser but another calibration: never a candidate
    stray = published[0][1].with_overrides({"calibration.seed": 5, "tags": ["other"]})
    publish_run(stray, tables={"perplexity": _ppl_rows({"wiki:validation": 1.0})})
    out = tmp_path / "choices.json"
    cells = study.choose(MODEL, out=out, layers=30)
    assert len(cells) == 28 and all(c.chosen is not None for c in cells)
    assert _chosen(cells, "wanda", 0.7, "owl") == {"allocation.owl_threshold_m": 7.0, "allocation.owl_lambda": 0.08}
    assert _chosen(cells, "wanda", 0.7, "dlp") == {"allocation.dlp_alpha": 0.1}
    assert _chosen(cells, "sparsegpt", 0.6, "ours") == {**SPLIT, "allocation.epsilon": 0.3}
    assert _chosen(cells, "wanda", 0.6, "ours") == {**MIXED, "allocation.epsilon": 0.2}  # over all three variants
    assert _chosen(cells, "sparsegpt", 0.7, "ours") == {**DEEP, "allocation.epsilon": 0.3}
    assert _chosen(cells, "wanda", 0.6, "depth") == {"allocation.depth_beta": 0.006897}  # f = 0.25: lowest 40.0
    assert _chosen(cells, "sparsegpt", 0.7, "alpha_peak") == {"allocation.epsilon": 0.1}
    data = json.loads(out.read_text())
    owl = next(c for c in data["cells"] if (c["method"], c["sparsity"], c["family"]) == ("wanda", 0.7, "owl"))
    assert [c["validation_ppl"] for c in owl["candidates"]] == [None, 30.0, 29.0, 31.0, 28.5, 33.0]
    assert owl["chosen"]["validation_ppl"] == 28.5 and owl["chosen"]["run_id"] == owl["candidates"][4]["run_id"]
    depth = next(c for c in data["cells"] if (c["method"], c["sparsity"], c["family"]) == ("wanda", 0.6, "depth"))
    assert depth["chosen"]["depth_fraction"] == 0.25
    table = study.choices_markdown(cells)
    assert "| wanda | 70% | OWL | owl_threshold_m=7, owl_lambda=0.08 | 28.500 | 5/6 |" in table
    label = study.FAMILY_BY_NAME["ours"].label
    assert f"| wanda | 60% | {label} | preset=all, metric_mix=alpha_peak, epsilon=0.2 | 21.000 | 12/12 |" in table
    assert f"| sparsegpt | 60% | {label} | preset=split, epsilon=0.3 | 22.000 | 12/12 |" in table
    mixed = next(c for c in data["cells"] if (c["method"], c["sparsity"], c["family"]) == ("wanda", 0.6, "ours"))
    assert mixed["chosen"]["variant"] == MIXED and mixed["chosen"]["overrides"]["allocation.metric_mix"] == "alpha_peak"

    # a failed latest attempt of the would-be winner: refused, or (allowed) the next best wins
    ours_cfg = next(cfg for cand, cfg in published if (cand.method, cand.sparsity, cand.family) == ("sparsegpt", 0.6, "ours")
                    and cand.knobs == {"allocation.epsilon": 0.3})
    publish_run(ours_cfg, status="failed", error="CUDA out of memory")
    with pytest.raises(RuntimeError, match="1 of 132 .*failed"):
        study.choose(MODEL, out=out, layers=30)
    cells = study.choose(MODEL, out=out, layers=30, allow_missing=True)
    assert _chosen(cells, "sparsegpt", 0.6, "ours") == {**SPLIT, "allocation.epsilon": 0.4}


def test_choose_refuses_a_missing_candidate(data_dir: Path, tmp_path: Path) -> None:
    _publish_validation(skip={7})
    with pytest.raises(RuntimeError, match="1 of 132 .*missing"):
        study.choose(MODEL, out=tmp_path / "c.json", layers=30)
    assert not (tmp_path / "c.json").exists()
    cells = study.choose(MODEL, out=tmp_path / "c.json", layers=30, allow_missing=True)
    missing = [r for c in cells for r in c.results if r.status == "missing"]
    assert len(missing) == 1 and missing[0].candidate == study.candidates(30)[7]


# ---- final -----------------------------------------------------------------------------------

def _choices(pick: int = -1) -> dict[str, Any]:
    """Choices of every cell: candidate ``pick`` of each family's grid (no store needed)."""
    cands = study.candidates(30)
    results = [study.CandidateResult(c, f"run-{i}", "succeeded", 10.0 + i) for i, c in enumerate(cands)]
    cells = study.choose_cells(results)
    for cell in cells:
        cell.chosen = len(cell.results) - 1 if pick == -1 else min(pick, len(cell.results) - 1)
    return study.choices_json(MODEL, 30, cells)


def test_final_sweep_has_the_chosen_knobs_and_seeds(tmp_path: Path) -> None:
    path = tmp_path / "choices.json"
    path.write_text(json.dumps(_choices(pick=1)))
    configs = study.write_final(MODEL, path, tmp_path / "final.yaml")
    assert expand_sweep(tmp_path / "final.yaml") == configs
    assert len(configs) == 14 + 42 + 14 + 1
    main = [c for c in configs if c.calibration.dataset == "wiki:train" and c.pruning.method != "dense"]
    domain = [c for c in configs if c.calibration.dataset == "lee"]
    seeds: dict[tuple, set[int]] = {}
    for c in main:
        seeds.setdefault((c.pruning.method, c.pruning.sparsity, study.family_of(c)), set()).add(c.calibration.seed)
    assert len(seeds) == 28
    assert all(s == ({0} if key[1] == 0.6 else {0, 1, 2}) for key, s in seeds.items())
    # candidate 1 of each grid: OWL M 5, lambda 0.08; DLP alpha 0.1; ATP f = 0.5; ours eps 0.2
    owl = {(c.allocation.owl_threshold_m, c.allocation.owl_lambda) for c in main if c.allocation.strategy == "owl"}
    assert owl == {(5.0, 0.08)}
    assert {c.allocation.dlp_alpha for c in main if c.allocation.strategy == "dlp"} == {0.1}
    assert {(c.pruning.sparsity, c.allocation.depth_beta) for c in main if c.allocation.strategy == "depth"} == {
        (0.6, 0.013793), (0.7, 0.010345)}
    assert {c.allocation.epsilon for c in main if study.family_of(c) == "ours"} == {0.2}
    assert len(domain) == 14 and all(c.pruning.sparsity == 0.7 and c.calibration.seed == 0 for c in domain)
    assert all("study-domain" in c.tags for c in domain) and not any("study-domain" in c.tags for c in main)
    assert {study.family_of(c) for c in domain} == {f.name for f in study.FAMILIES}
    dense = [c for c in configs if c.pruning.method == "dense"]
    assert len(dense) == 1 and dense[0].pruning.sparsity == 0.0
    for c in configs:
        ev = c.evaluation
        assert (ev.perplexity, ev.limit_windows, ev.batch_size, ev.zeroshot_tasks, ev.attention) == (
            ("wiki", "lee"), None, 8, ("wiki_cloze",), False)
        assert {"allocation-study", "study-final"} <= set(c.tags)
    text = (tmp_path / "final.yaml").read_text()
    assert "overlap" in text  # the lee-length caveat is written into the sweep


def test_final_refuses_a_cell_without_choice(tmp_path: Path) -> None:
    choices = _choices()
    choices["cells"][3]["chosen"] = None
    path = tmp_path / "choices.json"
    path.write_text(json.dumps(choices))
    with pytest.raises(ValueError, match="no chosen knobs"):
        study.write_final(MODEL, path, tmp_path / "final.yaml")
    with pytest.raises(ValueError, match="not 'gemma3-270m'"):
        study.write_final("gemma3-270m", path, tmp_path / "final.yaml")


# ---- the table -------------------------------------------------------------------------------

def _summary_row(family: str, wiki: list[float], method: str = "wanda") -> dict[str, Any]:
    s = pd.Series(wiki)
    return {"model": MODEL, "method": method, "sparsity": 0.7, "family": family, "wiki_mean": s.mean(),
            "wiki_std": s.std(ddof=1) if len(s) > 1 else math.nan, "wiki_n": len(s)}


def test_verdict_needs_a_margin_beyond_the_larger_spread() -> None:
    summary = pd.DataFrame([
        # wanda: ours has the lowest mean, but against OWL the margin 0.9 is within ours' spread (std 1.0):
        # a comparison of means says "wins"; against the smaller std (0) or the population std (0.82) too
        _summary_row("ours", [9.0, 10.0, 11.0]),
        _summary_row("owl", [10.9, 10.9, 10.9]),
        _summary_row("uniform", [20.0, 21.0, 22.0]),
        # sparsegpt: ours wins by more than the spread against both
        _summary_row("ours", [9.0, 9.1, 9.2], "sparsegpt"),
        _summary_row("owl", [10.0, 10.5, 11.0], "sparsegpt"),
        _summary_row("dlp", [12.0, 12.0, 12.3], "sparsegpt"),
    ])
    rivals = [_summary_row(f, [30.0, 30.0, 30.1], m) for m in ("wanda", "sparsegpt")
              for f in ("uniform", "owl", "alpha_peak", "dlp", "depth", "hessian_alpha") if f not in set(summary["family"][summary["method"] == m])]
    summary = pd.concat([summary, pd.DataFrame(rivals)], ignore_index=True)
    v = study.verdicts(summary, "wiki").set_index("method")
    assert v.at["wanda", "verdict"] == "no" and bool(v.at["wanda", "ahead_on_means"])
    assert v.at["wanda", "rival"] == "owl"
    assert v.at["wanda", "margin"] == pytest.approx(0.9) and v.at["wanda", "spread"] == pytest.approx(1.0)
    assert v.at["sparsegpt", "verdict"] == "yes" and v.at["sparsegpt", "rival"] == "owl"
    assert v.at["sparsegpt", "spread"] == pytest.approx(0.5)
    one_seed = pd.DataFrame([_summary_row("ours", [9.0]), _summary_row("owl", [12.0])])
    assert study.verdicts(one_seed, "wiki").iloc[0]["verdict"] == "undecided: 1 seed (1 of 6 rivals)"
    # a win over the families that are there is no win while an anchor is missing
    assert study.verdicts(summary[summary["family"] != "depth"], "wiki").set_index("method").at["sparsegpt", "verdict"] == "yes (5 of 6 rivals)"
    assert study.beats_by_spread((9.0, 0.1), (9.5, 0.4)) and not study.beats_by_spread((9.0, 0.6), (9.5, 0.1))


def _final_tables(wiki: float, lee: float, acc: float, stage: str = "pruned") -> dict[str, pd.DataFrame]:
    rows = [{"stage": stage, "dataset": ds, "text_digest": f"d-{ds}", "seqlen": 2048, "limit_windows": None,
             "n_windows": n, "total_windows": n, "n_tokens": n * 2047, "ppl": v} for ds, v, n in (("wiki", wiki, 175), ("lee", lee, 36))]
    zs = [{"stage": stage, "task": "wiki_cloze", "metric": "acc", "filter": "none", "value": acc, "num_fewshot": 0, "limit": None}]
    return {"perplexity": pd.DataFrame(rows), "zeroshot": pd.DataFrame(zs)}


def test_table_from_a_synthetic_store(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / f"choices-{MODEL}.json"
    path.write_text(json.dumps(_choices(pick=0)))
    configs = study.write_final(MODEL, path, tmp_path / "final.yaml")
    values = {"ours": ([9.0, 10.0, 11.0], 30.0), "owl": ([10.9, 10.9, 10.9], 35.0), "uniform": ([20.0, 21.0, 22.0], 50.0)}
    n = 0
    for c in configs:
        family = study.family_of(c)
        if c.pruning.method == "dense":
            publish_run(c, tables=_final_tables(19.2, 25.9, 0.8, stage="dense"), timings={"total": 100.0})
            n += 1
        elif c.pruning.method == "wanda" and c.pruning.sparsity == 0.7 and family in values:
            wiki, lee = values[family]
            if c.calibration.dataset == "lee":
                publish_run(c, tables=_final_tables(wiki[0] + 5, 12.0, 0.3), timings={"total": 50.0})
            else:
                publish_run(c, tables=_final_tables(wiki[c.calibration.seed], lee + c.calibration.seed, 0.4 + c.calibration.seed / 100),
                            timings={"total": 200.0 + c.calibration.seed})
            n += 1
    assert n == 1 + 3 * 4
    runs = study.study_runs(choices_dir=tmp_path)
    assert len(runs) == 13 and runs["seconds"].sum() == pytest.approx(100 + 3 * 50 + 3 * 603)
    summary = study.summarize(runs).set_index("family")
    assert summary.at["ours", "wiki_mean"] == pytest.approx(10.0) and summary.at["ours", "wiki_std"] == pytest.approx(1.0)
    assert summary.at["ours", "wiki_n"] == 3 and summary.at["ours", "lee_mean"] == pytest.approx(31.0)
    assert summary.at["ours", "wiki_cloze_mean"] == pytest.approx(0.41)
    assert summary.at["ours", "lee_calibrated_wiki"] == pytest.approx(14.0)  # the lee-calibrated run, not a seed
    assert summary.at["dense", "wiki_mean"] == pytest.approx(19.2)
    report = study.study_report(choices_dir=tmp_path)
    assert ("| smollm2-135m | wanda | 70% | ours: Hessian α (split, or mixed with weight α or with depth) | "
            "preset=split, metric=hessian_alpha, epsilon=0.1 | 10.00 ± 1.00 (n=3) | "
            "31.00 ± 1.00 (n=3) | 0.410 ± 0.010 (n=3) | 14.00 |") in report
    assert "| smollm2-135m | wanda | 70% | wiki | 10.00 ± 1.00 (n=3) | OWL | 10.90 ± 0.00 (n=3) | +0.90 | 1.00 | no (2 of 6 rivals) | yes |" in report
    assert "| smollm2-135m | wanda | 70% | lee | 31.00 ± 1.00 (n=3) | OWL | 36.00 ± 1.00 (n=3) | +5.00 | 1.00 | yes (2 of 6 rivals) | yes |" in report
    assert "- lee: ours wins by more than the spread in 0 of 1 (model, method, sparsity) cells (0 undecided with 1 seed, 1 missing some rivals)" in report
    assert "| all | all | 13 |" in report and f"{(100 + 150 + 1809) / 3600:.2f} |" in report
    # scripts/findings_tables.py leads with the same section (GPU time summary only)
    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "scripts" / "findings_tables.py")
    findings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(findings)
    section = findings.study_section(str(data_dir / "store"), choices_dir=tmp_path)
    assert section.startswith("## Allocation study") and "OWL | 10.90 ± 0.00 (n=3) | +0.90 | 1.00 | no (2 of 6 rivals)" in section
    assert "| run_id |" not in section and "| run_id |" in report


def test_final_runs_of_unchosen_knobs_are_reported_apart_and_never_compared(data_dir: Path, tmp_path: Path) -> None:
    """A final run whose knobs validation did not choose in the end (the first version of ours, run
    before its second variant was validated) gets a row of its own and no say in the verdict; without
    the filter its better numbers would be averaged into ours and turn the verdict."""
    path = tmp_path / f"choices-{MODEL}.json"
    path.write_text(json.dumps(_choices(pick=0)))  # ours: the split variant at its first epsilon
    configs = study.write_final(MODEL, path, tmp_path / "final.yaml")
    cell = [c for c in configs if c.pruning.method == "wanda" and c.pruning.sparsity == 0.7
            and c.calibration.dataset != "lee" and study.family_of(c) in ("ours", "owl")]
    for c in cell:
        wiki = {"ours": 12.0, "owl": 11.0}[study.family_of(c)] + c.calibration.seed / 10
        publish_run(c, tables=_final_tables(wiki, 30.0, 0.4), timings={"total": 10.0})
    ours = next(c for c in cell if study.family_of(c) == "ours" and c.calibration.seed == 0)
    for seed in (0, 1, 2):  # the same family with other knobs (the mixed variant), better numbers
        other = ours.with_overrides({**MIXED, "allocation.epsilon": 0.3, "calibration.seed": seed})
        publish_run(other, tables=_final_tables(5.0 + seed / 10, 30.0, 0.4), timings={"total": 10.0})
    runs = study.study_runs(choices_dir=tmp_path)
    assert runs["chosen"].sum() == 6 and (~runs["chosen"]).sum() == 3
    assert set(runs.loc[~runs["chosen"], "knobs"]) == {"preset=all, metric=hessian_alpha, metric_mix=alpha_peak, epsilon=0.3"}
    summary = study.summarize(runs).set_index("family")
    assert summary.at["ours", "wiki_mean"] == pytest.approx(12.1) and summary.at["ours", "wiki_n"] == 3
    assert summary.at["ours" + study.UNCHOSEN, "wiki_mean"] == pytest.approx(5.1)
    v = study.verdicts(summary.reset_index(), "wiki").iloc[0]
    assert v["rival"] == "owl" and v["margin"] == pytest.approx(-1.0) and not v["ahead_on_means"]
    text = study.study_table(summary.reset_index())
    assert "not chosen on validation" in text and "metric_mix=alpha_peak, epsilon=0.3" in text
    # without a choices file every final run counts (the table of a study that never re-chose)
    assert study.study_runs(choices_dir=tmp_path / "none")["chosen"].all()


# ---- proxy runs (CPU, small budget, wiki:validation) ------------------------------------------

def _proxy_ppl(ppl: float, windows: int = 24, stage: str = "pruned") -> dict[str, pd.DataFrame]:
    rows = _ppl_rows({"wiki:validation": ppl}).assign(stage=stage, limit_windows=24, n_windows=windows,
                                                      n_tokens=windows * 2047)
    return {"perplexity": rows}


def test_proxy_report_lists_the_tagged_runs_against_their_uniform(data_dir: Path) -> None:
    base = RunConfig.from_dict({"model": {"name": MODEL, "device": "cpu"},
                                "calibration": {"dataset": "wiki:train", "nsamples": 16, "seqlen": 2048, "seed": 0},
                                "evaluation": {"perplexity": ["wiki:validation"], "seqlen": 2048, "limit_windows": 24},
                                "tags": ["proxy-gemma"]})
    dense = base.with_overrides({"pruning.method": "dense", "pruning.sparsity": 0.0})
    uniform = base.with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.7})
    beta = study.depth_beta(0.5, 0.7, 30)
    depth = uniform.with_overrides({"allocation.strategy": "depth", "allocation.depth_beta": beta})
    mix = uniform.with_overrides({"allocation.strategy": "linear", **DEEP, "allocation.epsilon": 0.4})
    untagged = uniform.with_overrides({"pruning.sparsity": 0.6, "tags": []})
    publish_run(dense, tables=_proxy_ppl(20.0, stage="dense"), timings={"total": 120.0})
    publish_run(uniform, tables=_proxy_ppl(200.0), timings={"total": 480.0})
    # the depth (30 blocks, for f) is read from the run's allocation, not from a model prepared here
    ramp = [0.7 + beta * (i - 14.5) for i in range(30)]
    allocation = pd.DataFrame({"block": range(30), "matrix_type": ["q"] * 30, "name": [f"l{i}.q" for i in range(30)],
                               "numel": [100] * 30, "score": [float(i) for i in range(30)],
                               "sparsity_target": ramp, "sparsity_achieved": ramp})
    publish_run(depth, tables={**_proxy_ppl(150.0), "allocation": allocation}, timings={"total": 510.0})
    publish_run(mix, tables=_proxy_ppl(250.0), timings={"total": 600.0})
    publish_run(untagged, tables=_proxy_ppl(90.0), timings={"total": 60.0})

    runs = study.proxy_runs()
    assert runs["run_id"].tolist() == [dense.run_id, depth.run_id, uniform.run_id, mix.run_id]  # by ppl per cell
    report = study.proxy_report()
    lines = report.splitlines()
    assert lines[2] == f"| {MODEL} | dense | 0% | dense |  | 20.00 |  | 24/35 | wiki:train 16 × 2048, seed 0 | 2.0 |"
    assert lines[3] == (f"| {MODEL} | wanda | 70% | ATP depth | depth_beta={beta:g} (f=0.50) | 150.00 | -25.0% | 24/35 | "
                        "wiki:train 16 × 2048, seed 0 | 8.5 |")
    assert lines[4].startswith(f"| {MODEL} | wanda | 70% | uniform | — | 200.00 |  | 24/35 |")
    assert lines[5].startswith(f"| {MODEL} | wanda | 70% | Hessian α + depth (ours, third variant) | preset=all, "
                               "metric=hessian_alpha, metric_mix=depth, epsilon=0.4 | 250.00 | +25.0% |")
    assert "90.00" not in report and len(lines) == 6

    publish_run(uniform.with_overrides({"pruning.sparsity": 0.5}), tables=_proxy_ppl(80.0, windows=20), timings={"total": 1.0})
    with pytest.raises(RuntimeError, match="protocols"):
        study.proxy_runs()
