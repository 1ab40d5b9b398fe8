"""Sweeps: grid expansion, duplicates, invalid combinations, done detection, the sweep CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pruning.errors import ConfigError
from pruning.jobs import JobQueue
from pruning.jobs.sweep import expand_sweep, plan_sweep

BASE = {"model": {"name": "smollm2-135m"}, "evaluation": {"limit_windows": 2}}


def test_grid_is_the_product_of_every_axis() -> None:
    configs = expand_sweep({
        "base": BASE,
        "methods": ["magnitude", "wanda"],
        "presets": [None, "QKVout + split"],
        "sparsities": [0.5, 0.7],
        "epsilons": [0.2, 0.3],
        "seeds": [0, 1],
        "grid": {"allocation.strategy": ["uniform", "linear"]},
    })
    assert len(configs) == 2 * 2 * 2 * 2 * 2 * 2
    assert len({c.run_id for c in configs}) == 64
    assert {c.pruning.method for c in configs} == {"magnitude", "wanda"}
    assert {c.calibration.seed for c in configs} == {0, 1}
    split = [c for c in configs if c.allocation.preset == "QKVout + split"]
    assert split and all(c.allocation.granularity == "split" and c.allocation.score_groups == ("q", "k", "v", "o")
                         for c in split)
    assert all(c.evaluation.limit_windows == 2 for c in configs)      # base kept
    assert configs[0].pruning.method == "magnitude" and configs[-1].pruning.method == "wanda"


def test_duplicates_collapse_and_plan_counts_them() -> None:
    plan = plan_sweep({"base": BASE, "sparsities": [0.5, 0.5, 0.6], "models": ["smollm2-135m"]}, check_done=False)
    assert plan.n_combinations == 3 and len(plan.configs) == 2 and plan.n_duplicates == 1


def test_invalid_combinations_are_reported_with_the_field() -> None:
    spec = {"presets": ["QKVout + split", None], "sparsities": [0.5, 1.5],
            "grid": {"allocation.granularity": ["matrix"]}}
    plan = plan_sweep(spec, check_done=False)
    assert len(plan.invalid) == 3 and len(plan.configs) == 1          # only (no preset, 0.5) is valid
    assert any(bad.error.startswith("allocation") and "preset" in bad.error for bad in plan.invalid)
    assert any("pruning.sparsity" in bad.error for bad in plan.invalid)
    with pytest.raises(ConfigError, match="3 of 4 combinations are invalid"):
        expand_sweep(spec)


@pytest.mark.parametrize("spec, field", [
    ({"sparsity": [0.5]}, "unknown key"),
    ({"grid": {"pruning.sparsity": []}}, "grid.pruning.sparsity: empty list"),
    ({"methods": ["wanda"], "grid": {"pruning.method": ["magnitude"]}}, "also set by 'methods'"),
    ({"base": {"pruning": {"sparsity": 3}}}, "sweep.base: pruning.sparsity"),
    ({"grid": {"pruning.nonsense": [1]}}, "pruning.nonsense"),
])
def test_bad_sweep_specs_name_the_field(spec: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        expand_sweep(spec)


def test_plan_marks_done_and_active_runs(data_dir: Path) -> None:
    queue = JobQueue()
    configs = expand_sweep({"base": BASE, "sparsities": [0.4, 0.5, 0.6]})
    queue.enqueue("done-job", configs[0])
    queue.claim("w", gpu=None, heartbeat_timeout=10)
    queue.finish("done-job", "w", "succeeded", exit_code=0)
    queue.enqueue("active-job", configs[1])
    plan = plan_sweep({"base": BASE, "sparsities": [0.4, 0.5, 0.6]}, queue=queue, check_store=False)
    assert plan.done == {configs[0].run_id: "job done-job"}
    assert plan.active == {configs[1].run_id: "active-job"}
    assert [c.run_id for c in plan.to_run] == [configs[2].run_id]
    assert "already done: 1; already queued/running: 1; to run: 1" in plan.summary()


def test_sweep_cli_dry_run_then_submit(data_dir: Path, tmp_path: Path, capsys) -> None:
    from pruning.cli import main

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(BASE))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": "base.yaml", "methods": ["magnitude", "wanda"],
                                     "grid": {"pruning.sparsity": [0.5, 0.7]}}))
    assert main(["sweep", "--config", str(sweep), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 combinations -> 4 unique runs" in out and "to run: 4" in out and "dry run" in out
    assert list(data_dir.iterdir()) == []  # planning only reads: no queue, no folder is created
    unknown = tmp_path / "unknown.yaml"  # a bad name is refused before anything is created either
    unknown.write_text(yaml.safe_dump({"base": "base.yaml", "grid": {"evaluation.perplexity": [["no-such-corpus"]]}}))
    assert main(["sweep", "--config", str(unknown), "--yes"]) == 2
    assert "no-such-corpus" in capsys.readouterr().err and list(data_dir.iterdir()) == []
    assert JobQueue().list() == []
    assert main(["sweep", "--config", str(sweep)]) == 2                # no terminal, no --yes
    assert "--yes" in capsys.readouterr().err
    assert main(["sweep", "--config", str(sweep), "--yes"]) == 0
    assert "submitted 4 job(s)" in capsys.readouterr().out
    assert len(JobQueue().list(states=("queued",))) == 4
    assert main(["sweep", "--config", str(sweep), "--yes"]) == 0      # everything is queued already
    out = capsys.readouterr().out
    assert "already queued/running: 4" in out and "nothing to submit" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"sparsities": [0.5, 2.0]}))
    assert main(["sweep", "--config", str(bad), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "pruning.sparsity" in captured.out and "invalid combination" in captured.err


def test_sweep_force_reruns_done_runs(data_dir: Path, tmp_path: Path, capsys) -> None:
    """--force queues runs already in the results store too (the redo of a flagged run);
    without it only the missing ones go."""
    from pruning.cli import main
    from pruning.store.publish import publish_run

    spec = {"base": BASE, "sparsities": [0.5, 0.6]}
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump(spec))
    done = expand_sweep(spec)[0]
    publish_run(done)  # a succeeded run in the store
    assert main(["sweep", "--config", str(sweep), "--yes"]) == 0
    assert "already done: 1" in capsys.readouterr().out
    assert [j.run_id for j in JobQueue().list()] == [expand_sweep(spec)[1].run_id]
    assert main(["sweep", "--config", str(sweep), "--yes", "--force"]) == 0
    out = capsys.readouterr().out
    assert "--force: the 1 done run(s) run again (1 to submit)" in out
    queued = [j.run_id for j in JobQueue().list(states=("queued",))]
    assert sorted(queued) == sorted(c.run_id for c in expand_sweep(spec))  # the queued one is not queued twice


def test_dry_run_lines_name_the_allocation(data_dir: Path, capsys) -> None:
    """Runs that differ only in allocation metric or strategy are told apart in the dry-run listing."""
    from pruning.cli import main

    repo = Path(__file__).resolve().parents[1]
    assert main(["sweep", "--config", str(repo / "sweeps" / "followup-smollm2.yaml"), "--dry-run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "[to run]" in line]
    labels = sorted(line.split("  s=")[1].split("  seed=")[0] for line in lines)
    assert labels == sorted(
        [f"0.7  linear preset=all  metric={m}  eps={e}" for m, e in
         [("hessian_alpha", 0.3), ("hessian_alpha", 0.35), ("alpha", 0.2), ("alpha", 0.3)] * 2]
        + [f"{s}  linear preset=all  metric={m}  eps=0.3" for s, m in
           [(0.5, "hessian_alpha"), (0.6, "hessian_alpha"), (0.6, "alpha_peak"), (0.6, "hessian_alpha")]])
    assert main(["sweep", "--config", str(repo / "sweeps" / "grid-smollm2.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "s=0.5  owl M=5 λ=0.08  seed=0" in out and "s=0.7  uniform  seed=0" in out


def test_from_store_re_runs_the_stored_configs_of_matching_runs(data_dir: Path, capsys) -> None:
    """``sweep --from-store WHERE``: the stored config of each matching run (a float32-spectra run
    here), same run id; done runs run again only with --force; bad conditions are one clear line."""
    import json

    import pandas as pd

    from pruning.cli import main
    from pruning.config.run_config import RunConfig
    from pruning.store.publish import publish_run
    from pruning.jobs.sweep import plan_from_store

    def publish(sparsity: float, eig_dtype: str) -> str:
        config = RunConfig.from_dict({**BASE, "allocation": {"strategy": "linear", "preset": "all"},
                                      "pruning": {"method": "wanda", "sparsity": sparsity}})
        spectra = pd.DataFrame([{"model": "m", "block": 0, "matrix_type": "q", "name": "q", "source": "weight",
                                 "alpha_peak": 3.0, "eig_dtype": eig_dtype}])
        publish_run(config, tables={"spectra": spectra})
        return config.run_id

    old, new = publish(0.5, "float32"), publish(0.6, "float64")
    plan = plan_from_store("run_id IN (SELECT run_id FROM spectra WHERE eig_dtype = 'float32')")
    assert [c.run_id for c in plan.configs] == [old] and plan.done == {old: "results store"} and not plan.to_run
    assert plan.configs[0].pruning.sparsity == 0.5 and plan.configs[0].allocation.eig_dtype == "float64"
    assert len(plan_from_store("sparsity >= 0.5").configs) == 2

    assert main(["sweep", "--from-store", "eig_dtype_typo = 1", "--dry-run"]) == 2
    assert "--from-store: 'eig_dtype_typo = 1' is not a valid condition on the runs view" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give an SQL condition"):
        plan_from_store("  ")
    assert main(["sweep", "--from-store", f"run_id = '{old}'", "--dry-run", "--force"]) == 0
    out = capsys.readouterr().out
    assert "--force: the 1 done run(s) run again (1 to submit)" in out and old in out and new not in out

    # a stored config that no longer maps to its run id is listed as invalid, never re-run under another id
    runs = data_dir / "store" / "runs" / old / "runs.parquet"
    frame = pd.read_parquet(runs)
    cfg = json.loads(frame.loc[0, "config_json"])
    cfg["pruning"]["sparsity"] = 0.55
    frame.loc[0, "config_json"] = json.dumps(cfg)
    frame.to_parquet(runs)
    from pruning.store.queries import clear_cache

    clear_cache()
    plan = plan_from_store(f"run_id = '{old}'")
    assert not plan.configs and len(plan.invalid) == 1 and "stored config now maps to wanda-" in plan.invalid[0].error
