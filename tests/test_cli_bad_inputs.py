"""Bad input on the command line (issue 19): one line on stderr, ``error: ...`` naming the bad
value, exit status 2, and not one byte of the data directory changed (no queue created, no run
published). Every row runs the real CLI in-process (``pruning.cli.main``); the closed-pipe and
whole-process cases run it as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pruning.paths import REPO_ROOT

# (id, argv, text the error line must contain). ``{files}`` is the directory of the input files.
CASES: list[tuple[str, list[str], str]] = [
    # malformed / non-UTF-8 / non-mapping YAML: config file, sweep file, --set
    ("config-malformed", ["submit", "--config", "{files}/malformed.yaml"], "malformed.yaml' is not valid YAML"),
    ("config-not-utf8", ["submit", "--config", "{files}/latin1.yaml"], "latin1.yaml' is not UTF-8"),
    ("config-python-tag", ["run", "--config", "{files}/tag.yaml"], "python/object"),
    ("config-a-list", ["submit", "--config", "{files}/list.yaml"], "must hold a mapping, got list"),
    ("config-missing", ["submit", "--config", "{files}/missing.yaml"], "missing.yaml' does not exist"),
    ("run-config-malformed", ["run", "--config", "{files}/malformed.yaml"], "malformed.yaml' is not valid YAML"),
    ("sweep-malformed", ["sweep", "--config", "{files}/sweep-malformed.yaml", "--dry-run"],
     "sweep-malformed.yaml' is not valid YAML"),
    ("sweep-not-utf8", ["sweep", "--config", "{files}/latin1.yaml", "--dry-run"], "latin1.yaml' is not UTF-8"),
    ("sweep-bad-name", ["sweep", "--config", "{files}/sweep-bad-name.yaml", "--yes"], "'bogus' is not a corpus"),
    ("set-malformed", ["submit", "--config", "{files}/good.yaml", "--set", "pruning.sparsity=[0.5,"], "'[0.5,'"),
    ("run-set-malformed", ["run", "--set", "pruning.sparsity={a"], "'{a'"),
    ("set-no-equals", ["run", "--set", "sparsity"], "'sparsity' must look like KEY=VALUE"),
    ("set-unknown-key", ["submit", "--config", "{files}/good.yaml", "--set", "bogus.key=1"], "bogus.key"),
    # every field bounded
    ("seed-huge", ["submit", "--config", "{files}/good.yaml", "--set", "seed=100000000000000000000000"],
     "seed: 100000000000000000000000"),
    ("seed-negative", ["submit", "--config", "{files}/good.yaml", "--set", "calibration.seed=-1"], "calibration.seed: -1"),
    ("eval-seqlen-zero", ["submit", "--config", "{files}/good.yaml", "--set", "evaluation.seqlen=0"],
     "evaluation.seqlen: 0"),
    ("eval-seqlen-huge", ["run", "--set", "evaluation.seqlen=200000"], "evaluation.seqlen: 200000"),
    ("nsamples-zero", ["run", "--nsamples", "0"], "calibration.nsamples: 0"),
    ("batch-huge", ["submit", "--config", "{files}/good.yaml", "--set", "evaluation.batch_size=100000"],
     "evaluation.batch_size: 100000"),
    ("sparsity-nan", ["run", "--sparsity", "nan"], "pruning.sparsity: nan"),
    ("epsilon-out", ["submit", "--config", "{files}/good.yaml", "--set", "allocation.epsilon=1.5"],
     "allocation.epsilon: 1.5"),
    ("owl-m-inf", ["submit", "--config", "{files}/good.yaml", "--set", "allocation.owl_threshold_m=.inf"],
     "allocation.owl_threshold_m: inf"),
    ("nm-reversed", ["submit", "--config", "{files}/good.yaml", "--set", "pruning.nm=5:4"], "N=5, M=4"),
    # every name checked at submit and at run start, before any model load
    ("dataset-unknown", ["submit", "--config", "{files}/good.yaml", "--set", "calibration.dataset=bogus"],
     "calibration.dataset: 'bogus'"),
    ("text-missing", ["submit", "--config", "{files}/good.yaml", "--set",
                      "evaluation.perplexity=[text:/no/such/file.txt]"], "text:/no/such/file.txt"),
    ("task-unknown", ["submit", "--config", "{files}/good.yaml", "--set", "evaluation.zeroshot_tasks=[boolqq]"],
     "'boolqq' is not an lm-eval task"),
    ("metric-unknown", ["submit", "--config", "{files}/good.yaml", "--set", "allocation.metric=alpha_bogus"],
     "allocation.metric: 'alpha_bogus'"),
    ("method-unknown", ["run", "--method", "pruney"], "pruning.method: 'pruney'"),
    ("run-dataset-unknown", ["run", "--set", "calibration.dataset=nope"], "calibration.dataset: 'nope'"),
    ("run-metric-unknown", ["run", "--metric", "alpha_bogus"], "'alpha_bogus'"),
    ("run-model-traversal", ["run", "--model", "../../etc"], "'../../etc'"),
    ("run-model-missing", ["run", "--model", "{files}/no-such-model"], "no-such-model"),
    ("run-device", ["run", "--device", "tpu"], "model.device: 'tpu'"),
    # command-line numbers and names
    ("ppl-seqlen-zero", ["ppl", "--seqlen", "0"], "--seqlen: 0 is out of range"),
    ("ppl-dataset", ["ppl", "--dataset", "bogus"], "'bogus' is not a corpus"),
    ("ppl-dtype", ["ppl", "--dtype", "float8"], "'float8'"),
    ("worker-poll-nan", ["worker", "--poll", "nan"], "--poll: 'nan'"),
    ("worker-poll-negative", ["worker", "--poll", "-1"], "--poll: '-1'"),
    ("worker-timeout-inf", ["worker", "--heartbeat-timeout", "inf"], "--heartbeat-timeout: 'inf'"),
    ("worker-gpu", ["worker", "--gpus", "x", "--once"], "'x' is not a GPU index"),
    ("jobs-limit", ["jobs", "--limit", "0"], "--limit: 0"),
    ("jobs-status", ["jobs", "--status", "bogus"], "'bogus'"),
    ("job-unknown", ["job", "nope"], "'nope'"),
    ("cancel-unknown", ["cancel", "nope"], "'nope'"),
    ("prune-sparsity", ["prune", "--sparsity", "1.5"], "--sparsity: '1.5'"),
    ("prune-seed", ["prune", "--seed", "-3"], "--seed: -3"),
    ("zeroshot-task", ["zeroshot", "--tasks", "boolqq"], "'boolqq'"),
    ("spectra-seqlen", ["spectra", "--seqlen", "0", "--out", "{files}/out.parquet"], "--seqlen: 0"),
    ("attention-tokens", ["attention", "--tokens", "1"], "--tokens: 1"),
    ("allocate-binary", ["allocate", "--spectra", "{files}/binary.csv", "--sparsity", "0.5"],
     "binary.csv' is not a readable CSV"),
    ("allocate-binary-parquet", ["allocate", "--spectra", "{files}/binary.parquet", "--sparsity", "0.5"],
     "binary.parquet' is not a readable Parquet"),
    ("allocate-sparsity-nan", ["allocate", "--sparsity", "nan"], "--sparsity: 'nan'"),
    # lm-eval result layouts that are not lm-eval's
    ("lmeval-list", ["import", "lm-eval", "{files}/lm-list.json", "--model", "m", "--label", "l"],
     "unknown lm-eval layout"),
    ("lmeval-no-results", ["import", "lm-eval", "{files}/lm-no-results.json", "--model", "m", "--label", "l"],
     "no non-empty 'results'"),
    ("lmeval-results-list", ["import", "lm-eval", "{files}/lm-results-list.json", "--model", "m", "--label", "l"],
     "no non-empty 'results'"),
    ("lmeval-task-number", ["import", "lm-eval", "{files}/lm-task-number.json", "--model", "m", "--label", "l"],
     "results['boolq'] is int"),
    ("lmeval-value-text", ["import", "lm-eval", "{files}/lm-value-text.json", "--model", "m", "--label", "l"],
     "'abc'"),
    ("lmeval-config-text", ["import", "lm-eval", "{files}/lm-config-text.json", "--model", "m", "--label", "l"],
     "'config' is str"),
    ("lmeval-fewshot-text", ["import", "lm-eval", "{files}/lm-fewshot-text.json", "--model", "m", "--label", "l"],
     "'five'"),
    ("lmeval-value-inf", ["import", "lm-eval", "{files}/lm-value-inf.json", "--model", "m", "--label", "l"],
     "not a finite number"),
    ("lmeval-binary", ["import", "lm-eval", "{files}/binary.csv", "--model", "m", "--label", "l"], "not valid JSON"),
    # usage errors are one line too
    ("unknown-command", ["bogus"], "'bogus'"),
    ("no-command", [], "COMMAND"),
]

LM_EVAL_FILES = {
    "lm-list.json": [1, 2],
    "lm-no-results.json": {"x": 1},
    "lm-results-list.json": {"results": [1]},
    "lm-task-number.json": {"results": {"boolq": 5}},
    "lm-value-text.json": {"results": {"boolq": {"acc": "abc"}}},
    "lm-config-text.json": {"results": {"boolq": {"acc": 0.5}}, "config": "x"},
    "lm-fewshot-text.json": {"results": {"boolq": {"acc": 0.5}}, "n-shot": {"boolq": "five"}},
}


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    """The bad (and one good) input files, outside the data directory."""
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "good.yaml").write_text("pruning: {method: magnitude}\n")
    (root / "malformed.yaml").write_text("pruning: {method: magnitude\n  sparsity: [0.5,\n")
    (root / "latin1.yaml").write_bytes("label: caf\u00e9\n".encode("latin-1"))
    (root / "tag.yaml").write_text("seed: !!python/object/apply:os.system [echo hi]\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "sweep-malformed.yaml").write_text("sparsity: [0.5, \n")
    (root / "sweep-bad-name.yaml").write_text("base: {pruning: {method: magnitude}}\nsparsities: [0.5, 0.6]\n"
                                              "grid: {calibration.dataset: [wiki, bogus]}\n")
    (root / "binary.csv").write_bytes(bytes(range(256)) * 4)
    (root / "binary.parquet").write_bytes(bytes(range(256)) * 4)
    for name, data in LM_EVAL_FILES.items():
        (root / name).write_text(json.dumps(data))
    (root / "lm-value-inf.json").write_text('{"results": {"boolq": {"acc": 1e999}}}')
    return root


def tree_digest(root: Path) -> dict[str, str]:
    """SHA-256 of every file under ``root`` (relative path -> digest)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture()
def seeded_data_dir(data_dir: Path) -> Path:
    """A data directory that already holds a queue with one job, so 'unchanged' is not trivial."""
    from pruning.config.run_config import RunConfig
    from pruning.jobs import LocalBackend

    LocalBackend(check_store=False).submit(RunConfig().with_overrides({"pruning.method": "magnitude"}))
    return data_dir


@pytest.mark.parametrize(("argv", "named"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_exit_2_and_changes_nothing(argv, named, files, seeded_data_dir, capsys) -> None:
    from pruning.cli import main

    argv = [a.replace("{files}", str(files)) for a in argv]
    before = tree_digest(seeded_data_dir)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert named.replace("{files}", str(files)) in lines[0]
    assert "Traceback" not in err
    assert tree_digest(seeded_data_dir) == before


def test_no_queue_is_created_by_a_bad_submit_or_a_listing(data_dir, files, capsys) -> None:
    from pruning.cli import main

    assert main(["submit", "--config", str(files / "good.yaml"), "--set", "calibration.dataset=bogus"]) == 2
    assert main(["job", "nope"]) == 2
    assert main(["jobs"]) == 0
    assert tree_digest(data_dir) == {} and not (data_dir / "jobs").exists()


def _cli(args: list[str], data_dir: Path, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PRUNING_LAB_DATA=str(data_dir), PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, "-m", "pruning", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize("args", [["runs"], ["jobs", "--json"]], ids=["runs", "jobs"])
def test_a_closed_pipe_ends_quietly_with_status_0(args, data_dir) -> None:
    """``python -m pruning runs | head``: the reader is gone before the command writes."""
    proc = _cli(args, data_dir)
    proc.stdout.close()                         # like `head` exiting before the output comes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err


def test_whole_process_run_input_error_is_one_line_and_publishes_nothing(data_dir) -> None:
    """The real process (logging configured, progress bar): `run --model ../../etc` is one line,
    status 2, and no failed run appears in the store."""
    before = tree_digest(data_dir)
    proc = _cli(["run", "--model", "../../etc"], data_dir)
    out, err = proc.communicate(timeout=120)
    lines = err.decode().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'../../etc'" in lines[0]
    assert tree_digest(data_dir) == before


@pytest.mark.parametrize("strategy, hint", [("evopress", "searches levels on the model"),
                                            ("probe", "prunes one block of a run")])
def test_allocate_refuses_the_strategies_that_need_a_run(strategy, hint, capsys) -> None:
    from pruning.cli import main

    assert main(["allocate", "--spectra", "x.csv", "--sparsity", "0.7", "--strategy", strategy]) == 2
    err = capsys.readouterr().err
    assert f"--strategy {strategy}: {hint}" in err and "accepted here: uniform, linear, owl, dlp, depth" in err
