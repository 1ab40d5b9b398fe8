"""One run end to end (pruning.run.pipeline.execute_run) on a tiny random model with a real
tokenizer: reproducibility, published artifacts, failures recorded as failed."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from pruning.config.run_config import RunConfig
from pruning.errors import ModelNotFoundError
from pruning.model.tokenizer import tokenizer_fingerprint
from pruning.run.pipeline import execute_run
from pruning.store import list_runs, run_detail, run_table
from pruning.model.synthetic import save_tiny_model_dir


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


def _config(model_dir, **overrides) -> RunConfig:
    base = RunConfig.from_dict({
        "model": {"name": str(model_dir)},
        "calibration": {"dataset": "wiki", "nsamples": 4, "seqlen": 64, "seed": 0},
        "pruning": {"method": "sparsegpt", "sparsity": 0.6},
        "allocation": {"strategy": "linear", "preset": "QKVout + split", "metric": "alpha_peak", "epsilon": 0.2},
        "evaluation": {"perplexity": ["wiki"], "seqlen": 64, "limit_windows": 3},
    })
    return base.with_overrides(overrides) if overrides else base


def test_same_config_and_seed_gives_bitwise_identical_perplexity(tiny_dir, data_dir):
    a = execute_run(_config(tiny_dir), publish=False)
    b = execute_run(_config(tiny_dir), publish=False)
    pa, pb = a.perplexity_of("wiki"), b.perplexity_of("wiki")
    assert pa == pb and pa == pa  # bitwise equal and finite
    assert a.tables["allocation"]["sparsity_achieved"].tolist() == b.tables["allocation"]["sparsity_achieved"].tolist()
    # a different calibration seed draws other windows and changes the pruned model
    c = execute_run(_config(tiny_dir, **{"calibration.seed": 1}), publish=False)
    assert c.perplexity_of("wiki") != pa


def test_published_run_holds_config_allocation_and_budgeted_perplexity(tiny_dir, data_dir):
    config = _config(tiny_dir)
    outcome = execute_run(config)
    assert outcome.status == "succeeded"
    runs = list_runs()
    row = runs[runs["run_id"] == config.run_id].iloc[0]
    assert row["status"] == "succeeded" and row["method"] == "sparsegpt" and row["preset"] == "QKVout + split"
    detail = run_detail(config.run_id)
    assert detail["config"]["pruning"]["sparsity"] == 0.6
    assert "torch" in str(detail["env"])
    # both fingerprints: the weights' and the tokenizer's (the same weights with another tokenizer cut the text
    # into other windows: gemma3-270m's GPU batch), the latter as the tokenizer in the directory gives it
    assert detail["env"]["model_fingerprint"] == outcome.model_fingerprint and len(outcome.model_fingerprint) == 16
    assert detail["env"]["tokenizer_fingerprint"] == tokenizer_fingerprint(AutoTokenizer.from_pretrained(tiny_dir))
    alloc = run_table(config.run_id, "allocation")
    mean = (alloc["sparsity_target"] * alloc["numel"]).sum() / alloc["numel"].sum()
    assert abs(mean - 0.6) < 1e-9
    assert abs((alloc["sparsity_achieved"] * alloc["numel"]).sum() / alloc["numel"].sum() - 0.6) < 1e-3
    ppl = run_table(config.run_id, "perplexity")
    assert ppl["limit_windows"].tolist() == [3] and ppl["n_windows"].tolist() == [3]
    spectra = run_table(config.run_id, "spectra")
    assert len(spectra) == 2 * 7 and spectra["alpha_peak"].notna().all()


def test_input_error_publishes_nothing_but_a_crash_during_the_work_is_published_as_failed(
        tmp_path, tiny_dir, data_dir, monkeypatch):
    """Issue 19: a model that does not exist is an input error, raised before the work starts and
    never published; a failure during the work is published as a failed run with its error."""
    missing = _config(tmp_path / "no-such-model")
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        execute_run(missing)
    assert missing.run_id not in set(list_runs()["run_id"])

    import pruning.run.stages as run_stages

    def exploding_load(*args, **kwargs):
        raise RuntimeError("disk exploded while loading")

    monkeypatch.setattr(run_stages, "load_model", exploding_load)
    config = _config(tiny_dir)
    with pytest.raises(RuntimeError, match="disk exploded"):
        execute_run(config)
    runs = list_runs()
    row = runs[runs["run_id"] == config.run_id].iloc[0]
    assert row["status"] == "failed"
    assert "disk exploded" in run_detail(config.run_id)["error"]


def test_spectra_precision_and_text_digest_are_recorded(tiny_dir, data_dir):
    """Issue 15: the spectra a run allocates from carry their precision (float64 unless the config
    asks for float32), and every perplexity row names the text it scored (SHA-256, 16 hex)."""
    import hashlib

    from pruning.text.data import load_text

    default = execute_run(_config(tiny_dir, **{"pruning.method": "magnitude"}), publish=False)
    assert set(default.tables["spectra"]["eig_dtype"]) == {"float64"}
    f32 = execute_run(_config(tiny_dir, **{"pruning.method": "magnitude", "allocation.eig_dtype": "float32"}),
                      publish=False)
    assert set(f32.tables["spectra"]["eig_dtype"]) == {"float32"}
    digest = hashlib.sha256(load_text("wiki", "test").encode("utf-8")).hexdigest()[:16]
    assert default.tables["perplexity"]["text_digest"].tolist() == [digest]
    from pruning.text.corpora import corpus_fingerprints

    assert corpus_fingerprints()["wiki.test"] == digest  # the same digest the environment records


def test_progress_never_goes_back(tiny_dir, data_dir):
    """Issue 17: a job's progress bar went 15 % -> 5 % (the dense attention statistics are reported in
    the calibration band before the spectra stage runs). Every reported fraction is now at least the
    one before, and the run ends at 100 %."""
    seen: list[tuple[str, float]] = []
    config = _config(tiny_dir, **{"evaluation.attention": True, "evaluation.attention_tokens": 32})
    execute_run(config, progress=lambda stage, fraction, message: seen.append((stage, fraction)), publish=False)
    fractions = [f for _, f in seen]
    assert {"load", "spectra", "calibration", "prune", "evaluation"} <= {s for s, _ in seen}
    assert all(b >= a for a, b in zip(fractions, fractions[1:])), seen
    assert fractions[-1] == 1.0
