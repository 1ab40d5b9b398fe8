"""The shipped demo data (issue 10): every run of ``sweeps/grid-smollm2.yaml`` is in ``data/store``,
succeeded, with the full protocol's tables, and its perplexities are the ones docs/FINDINGS.md quotes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pruning.calibration.protocol import DEFAULT_CALIBRATION
from pruning.store.queries import list_runs, perplexity_cells, run_table, zeroshot_scores
from pruning.jobs.sweep import expand_sweep

pytestmark = pytest.mark.shipped

REPO = Path(__file__).resolve().parents[1]
STORE = REPO / "data" / "store"
SWEEP = REPO / "sweeps" / "grid-smollm2.yaml"


@pytest.fixture(scope="module")
def grid_ids() -> list[str]:
    return [config.run_id for config in expand_sweep(SWEEP)]


def test_every_sweep_run_is_shipped_and_succeeded(grid_ids: list[str]) -> None:
    assert len(grid_ids) == 69 and len(set(grid_ids)) == 69
    runs = list_runs(root=STORE).set_index("run_id")
    missing = sorted(set(grid_ids) - set(runs.index))
    assert not missing, f"grid runs not in data/store: {missing}"
    assert set(runs.loc[grid_ids, "status"]) == {"succeeded"}
    assert set(runs.loc[grid_ids, "model"]) == {"smollm2-135m"}


def test_every_run_has_the_full_protocol(grid_ids: list[str]) -> None:
    cells = perplexity_cells(root=STORE, model="smollm2-135m", stage=None)
    cells = cells[cells["run_id"].isin(grid_ids)]
    # wiki and lee, each on the whole test split (no window budget)
    per_run = cells.groupby("run_id")["dataset"].apply(frozenset)
    assert len(per_run) == 69 and set(per_run) == {frozenset({"wiki", "lee"})}
    assert cells["limit_windows"].isna().all()
    zs = zeroshot_scores(grid_ids, root=STORE)
    acc = zs[(zs["task"] == "wiki_cloze") & (zs["metric"] == "acc")]
    assert set(acc["run_id"]) == set(grid_ids)
    assert acc["value"].between(0.25, 1.0).all()  # at or above chance (4 choices)


def test_shipped_numbers_match_the_findings(grid_ids: list[str]) -> None:
    cells = perplexity_cells(root=STORE, model="smollm2-135m", stage=None)
    # the grid's calibration (the allocation study's runs calibrate on wiki:train: another experiment)
    wiki = cells[(cells["dataset"] == "wiki") & ((cells["calibration"] == DEFAULT_CALIBRATION) | cells["calibration"].isna())]
    # the precision check's bfloat16 twins (tag precision-check) are another dtype, not the grid's numbers
    runs = list_runs(STORE)
    bf16 = set(runs.loc[runs["tags"].map(lambda tags: "precision-check" in tags), "run_id"])
    assert len(bf16) == 7
    wiki = wiki[~wiki["run_id"].isin(bf16)]

    def ppl(method: str, sparsity: float, strategy: str, preset: str | None = None,
            metric: str | None = None, epsilon: float | None = None) -> float:
        sub = wiki[(wiki["method"] == method) & ((wiki["sparsity"] - sparsity).abs() < 1e-9)
                   & (wiki["strategy"] == strategy)]
        if preset is not None:
            sub = sub[sub["preset"] == preset]
        if metric is not None:
            sub = sub[sub["metric"] == metric]
        if epsilon is not None:
            sub = sub[(sub["epsilon"] - epsilon).abs() < 1e-9]
        # the dense model is evaluated by the grid and again by the allocation study: one number
        assert len(sub) == 1 or (method == "dense" and sub["ppl"].round(9).nunique() == 1), sub
        return round(float(sub["ppl"].iloc[0]), 2)

    assert ppl("dense", 0.0, "uniform") == 19.21
    assert ppl("sparsegpt", 0.6, "uniform") == 79.83
    assert ppl("sparsegpt", 0.6, "linear", "all", "hessian_alpha", 0.2) == 71.96
    assert ppl("magnitude", 0.5, "uniform") == 461.90
    assert ppl("wanda", 0.6, "linear", "all", "hessian_alpha", 0.2) == 97.07
    assert ppl("wanda", 0.7, "uniform") == 829.47
    assert ppl("wanda", 0.7, "owl") == 744.84
    assert ppl("wanda", 0.7, "linear", "all", "hessian_alpha", 0.2) == 358.83
    assert [ppl("wanda", 0.7, "linear", "all", "alpha_peak", e) for e in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)] == [
        632.69, 457.73, 423.72, 452.23, 392.88, 405.29]


def test_the_wider_epsilon_follow_up_is_shipped() -> None:
    """sweeps/eps-wide-smollm2.yaml: same protocol (its base config is the grid's Wanda ε 0.2 run)."""
    ids = [config.run_id for config in expand_sweep(REPO / "sweeps" / "eps-wide-smollm2.yaml")]
    runs = list_runs(root=STORE).set_index("run_id")
    assert len(ids) == 7 and set(runs.loc[ids, "status"]) == {"succeeded"}
    cells = perplexity_cells(root=STORE, model="smollm2-135m")
    wiki = cells[cells["run_id"].isin(ids) & (cells["dataset"] == "wiki")]
    by = {(m, round(e, 2)): round(p, 2) for m, e, p in zip(wiki["method"], wiki["epsilon"], wiki["ppl"])}
    assert by == {("wanda", 0.2): 452.23, ("wanda", 0.35): 555.26, ("wanda", 0.4): 702.91, ("wanda", 0.45): 2709.98,
                  ("wanda", 0.5): 2312.89, ("sparsegpt", 0.3): 197.01, ("sparsegpt", 0.4): 208.96}


def test_the_hessian_and_weightwatcher_follow_up_is_shipped() -> None:
    """sweeps/followup-smollm2.yaml: at 70 %, Hessian alpha at ε 0.3 / 0.35 and WeightWatcher's alpha
    at ε 0.2 / 0.3; at 50-60 %, ε 0.3 (docs/FINDINGS.md, findings 10 and 11)."""
    configs = expand_sweep(REPO / "sweeps" / "followup-smollm2.yaml")
    runs = list_runs(root=STORE).set_index("run_id")
    ids = [c.run_id for c in configs]
    assert len(set(ids)) == 12 and set(runs.loc[ids, "status"]) == {"succeeded"}
    cells = perplexity_cells(root=STORE, model="smollm2-135m")
    wiki = cells[cells["run_id"].isin(ids) & (cells["dataset"] == "wiki")]
    by = {(m, s, me, round(e, 2)): round(p, 2)
          for m, s, me, e, p in zip(wiki["method"], wiki["sparsity"], wiki["metric"], wiki["epsilon"], wiki["ppl"])}
    assert by == {("wanda", 0.7, "hessian_alpha", 0.3): 348.88, ("wanda", 0.7, "hessian_alpha", 0.35): 359.77,
                  ("wanda", 0.7, "alpha", 0.2): 444.31, ("wanda", 0.7, "alpha", 0.3): 400.03,
                  ("sparsegpt", 0.7, "hessian_alpha", 0.3): 182.56, ("sparsegpt", 0.7, "hessian_alpha", 0.35): 181.93,
                  ("sparsegpt", 0.7, "alpha", 0.2): 179.06, ("sparsegpt", 0.7, "alpha", 0.3): 193.65,
                  ("wanda", 0.5, "hessian_alpha", 0.3): 42.62, ("wanda", 0.6, "hessian_alpha", 0.3): 102.15,
                  ("wanda", 0.6, "alpha_peak", 0.3): 106.59, ("sparsegpt", 0.6, "hessian_alpha", 0.3): 72.49}
    # every follow-up run stored the spectra its allocation used: Hessian spectra only where asked
    for config in configs:
        sources = set(run_table(config.run_id, "spectra", root=STORE)["source"])
        assert sources == ({"weight", "hessian"} if config.allocation.metric == "hessian_alpha" else {"weight"})


def test_allocations_hit_their_target(grid_ids: list[str]) -> None:
    """Every stored allocation averages (parameter-weighted) to the run's target sparsity."""
    runs = list_runs(root=STORE).set_index("run_id")
    for run_id in grid_ids:
        target = float(runs.loc[run_id, "sparsity"])
        alloc = run_table(run_id, "allocation", root=STORE)
        weights = alloc["numel"].astype(float)
        achieved = float((alloc["sparsity_achieved"] * weights).sum() / weights.sum())
        assert achieved == pytest.approx(target, abs=2e-3), run_id


def test_grid_timings_summarise_the_stored_runs() -> None:
    from bench.grid_timings import grid_timings, summary

    frame = grid_timings("grid-smollm2", STORE)
    assert len(frame) == 69 and set(frame["device"]) == {"NVIDIA H200"}
    table = summary(frame)
    assert table.groupby("method")["runs"].sum().to_dict() == {"dense": 1, "magnitude": 21, "sparsegpt": 21, "wanda": 26}
    dense = table[table["method"] == "dense"].iloc[0]
    assert dense["total median"] == 124.8 and dense["total max"] == 124.8
    # the runs of one code revision are grouped; the earliest revision comes first: uniform and OWL
    # runs of the second and third sessions, then the 2026-11-30 re-run of every run whose spectra
    # were float32 (every linear allocation and the dense run)
    assert list(table["revision"].str[:7].unique()) == ["93dcd6d", "781d41c", "3a784b0"]
    assert table.set_index(["revision", "method"])["runs"].to_dict() == {
        ("93dcd6dabc", "sparsegpt"): 6, ("93dcd6dabc", "wanda"): 1,
        ("781d41c7f3", "magnitude"): 6, ("781d41c7f3", "wanda"): 5,
        ("3a784b0192", "dense"): 1, ("3a784b0192", "magnitude"): 15, ("3a784b0192", "sparsegpt"): 15,
        ("3a784b0192", "wanda"): 20}
    # the study's first two-GPU batch ran from a copy without git: its runs are named by their source digest
    study = grid_timings("allocation-study", STORE)
    assert len(study) == 173 and (study["revision"] == "src:3a93d8").sum() == 59 and "unrecorded" not in set(study["revision"])
    with pytest.raises(SystemExit, match="no succeeded runs tagged 'nope'"):
        grid_timings("nope", STORE)
    with pytest.raises(SystemExit, match="is invalid"):
        grid_timings("x' OR 1=1 --", STORE)


def test_every_run_reads_todays_wiki_text_and_the_redo_superseded_the_older_runs() -> None:
    """The first GPU session read an older build of the wiki text (356,178 scored tokens); those 36
    runs, exactly the runs of sweeps/grid-smollm2-redo.yaml, were re-run. Every query now reads the
    new attempt (``<id>~2``, today's 358,225 tokens), the first attempt stays on disk as history, and
    no run is still tagged ``older-wiki-text``."""
    import pandas as pd

    from pruning.store.annotations import read_annotation
    from pruning.store.queries import run_sql

    counts = run_sql("SELECT p.run_id, p.n_tokens FROM perplexity p JOIN runs r USING (run_id) "
                     "WHERE r.model = 'smollm2-135m' AND p.dataset = 'wiki'", root=STORE)
    assert set(counts["n_tokens"]) == {358_225}
    assert not [r for r in counts["run_id"] if "older-wiki-text" in read_annotation(r, root=STORE).get("tags", [])]
    redo = {config.run_id for config in expand_sweep(REPO / "sweeps" / "grid-smollm2-redo.yaml")}
    assert len(redo) == 36
    assert redo <= {p.name.split("~")[0] for p in (STORE / "runs").glob("*~2")}
    for run_id in redo:
        first = pd.read_parquet(STORE / "runs" / run_id / "perplexity.parquet")
        assert set(first.loc[first["dataset"] == "wiki", "n_tokens"]) == {356_178}


def test_the_redo_reproduced_every_run_that_reads_no_calibration_text() -> None:
    """Magnitude pruning with a uniform or weight-spectrum allocation never reads the calibration
    split, and the lee text did not change: across two GPU sessions their lee perplexity is bitwise
    equal. OWL and Hessian alpha read calibration activations, so those cells (and only those) moved."""
    import pandas as pd

    redo = [config for config in expand_sweep(REPO / "sweeps" / "grid-smollm2-redo.yaml")
            if config.pruning.method == "magnitude"]
    same, moved = set(), set()
    for config in redo:  # attempt 1 (older text) against attempt 2 (today's text, float32 spectra as before)
        lee = [pd.read_parquet(STORE / "runs" / name / "perplexity.parquet").query("dataset == 'lee'")["ppl"].item()
               for name in (config.run_id, f"{config.run_id}~2")]
        (same if lee[0] == lee[1] else moved).add(config.run_id)
    reads_calibration = {c.run_id for c in redo
                         if c.allocation.strategy == "owl" or c.allocation.metric == "hessian_alpha"}
    assert len(same) == 15 and moved == reads_calibration and len(moved) == 6


def test_findings_tables_are_the_stored_numbers() -> None:
    """Every table of docs/FINDINGS.md that scripts/findings_tables.py prints from the store appears
    there verbatim (re-run the script and paste its output after new runs land)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("findings_tables", REPO / "scripts" / "findings_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from pruning.store.queries import run_sql

    df = run_sql(module.QUERY, root=STORE)
    findings = (REPO / "docs" / "FINDINGS.md").read_text()
    tables = module.allocation_tables(df).split("### ")[1:] + [module.epsilon_table(df)]
    assert len(tables) == 4
    for table in tables:
        assert table.strip() in findings, table.splitlines()[0]
    assert "| wanda | 70% | 829.47 | 744.84 | 452.23 | 444.89 | 540.99 | 558.20 | **358.83** |" in findings
    for line in module.protocol_lines(str(STORE)).strip().splitlines()[1:]:  # one protocol per text
        assert line in findings
    changed = module.what_changed(str(STORE), df)
    assert changed.startswith("69 runs re-run with float64 spectra") and changed.strip() in findings


def test_the_float64_re_run_superseded_every_float32_spectrum() -> None:
    """Issue 15: the 69 runs whose spectra were float32 on the GPU (every linear allocation and the
    dense run) were re-run with float64 spectra; their latest attempt is float64, the one before float32,
    and runs whose allocation reads no spectra (uniform, OWL) were not re-run."""
    from pruning.store.queries import run_attempts, run_sql

    runs = run_sql("SELECT run_id, strategy, method FROM runs WHERE kind = 'run' AND model = 'smollm2-135m' "
                   "AND NOT list_has_any(coalesce(config_tags, []), ['allocation-study', 'proxy-depth-mix', "
                   "'proxy-sensitivity', 'block-sensitivity', 'precision-check'])",
                   root=STORE)  # issue 16's runs (the study, the CPU runs that motivated its third variant), issue
    # 28's sensitivity profiles (CPU proxy and GPU) and issue 26's bfloat16 precision check came later
    rerun = 0
    for run_id, strategy, method in zip(runs["run_id"], runs["strategy"], runs["method"]):
        att = run_attempts(run_id, root=STORE)
        if strategy == "linear" or method == "dense":
            assert att["eig_dtype"].tolist()[-2:] == ["float32", "float64"], run_id
            rerun += 1
        else:
            assert att["eig_dtype"].isna().all(), run_id  # they never computed spectra
    assert rerun == 69
    # a spectrum the allocation barely reads the same way gives the same pruned model, bit for bit:
    # WeightWatcher's alpha drops eigenvalues <= 1e-5, so float32 and float64 agree on it and the
    # Wanda 70 % `all · alpha` runs reproduce their perplexity exactly across two GPU sessions
    for run_id in ("wanda-2e41de2793fb", "wanda-2f43e5b81569", "dense-9ab516d6c00d"):
        att = run_attempts(run_id, root=STORE)
        assert att["ppl_wiki"].iloc[-1] == att["ppl_wiki"].iloc[-2] and att["ppl_lee"].iloc[-1] == att["ppl_lee"].iloc[-2]
