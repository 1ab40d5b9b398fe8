"""Model resolution, family registry, fingerprint, corpora, calibration sampler, perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from pruning.text.data import calibration_batch, load_text, tokenize_text
from pruning.errors import ConfigError, CorpusUnavailableError, ModelNotFoundError
from pruning.evaluation.perplexity import make_windows, perplexity
from pruning.model.families import family_for_model_type, prunable_matrices
from pruning.model.load import model_fingerprint, resolve_model


def test_unknown_model_lists_accepted_forms(tmp_path):
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model(str(tmp_path / "nope"))
    assert "alias" in str(err.value) and ".gguf" in str(err.value) and "org/name" in str(err.value)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))


def test_hub_ids_resolve_as_hub():
    src = resolve_model("meta-llama/Llama-2-7b-hf")
    assert src.kind == "hub" and src.location == "meta-llama/Llama-2-7b-hf"


def test_family_registry_by_model_type_not_name():
    assert family_for_model_type("llama").name == "llama"
    assert family_for_model_type("gemma3_text").bos_each_window is True
    with pytest.raises(ConfigError, match="known model types"):
        family_for_model_type("gpt2")


def test_prunable_matrices_cover_seven_types_per_block(tiny_llama):
    refs = prunable_matrices(tiny_llama)
    assert len(refs) == 2 * 7
    assert [r.matrix_type for r in refs[:7]] == ["q", "k", "v", "o", "gate", "up", "down"]
    k = refs[1]
    assert k.name == "model.layers.0.self_attn.k_proj" and k.shape == (32, 64)  # 2 kv heads x 16


def test_fingerprint_changes_when_a_weight_is_pruned(tiny_llama):
    before = model_fingerprint(tiny_llama)
    assert before == model_fingerprint(tiny_llama)
    with torch.no_grad():
        tiny_llama.model.layers[1].mlp.down_proj.weight[3, 5] = 0.0
    assert model_fingerprint(tiny_llama) != before


def test_text_corpus_and_hub_error(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("hello world")
    assert load_text(f"text:{f}") == "hello world"
    with pytest.raises(ConfigError, match="does not exist"):
        load_text(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(ConfigError, match="text:PATH"):
        load_text("wikitext3")


def test_hub_corpus_offline_says_how_to_use_local_text(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusUnavailableError, match="text:PATH"):
        load_text("wikitext2")


class _CharTokenizer:
    def __call__(self, text, add_special_tokens=False, return_attention_mask=False):
        return {"input_ids": [ord(c) % 256 for c in text]}


def test_calibration_sampler_is_deterministic_and_shaped(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("".join(chr(97 + i % 26) for i in range(5000)))
    a = calibration_batch(_CharTokenizer(), f"text:{f}", 4, 64, seed=0)
    b = calibration_batch(_CharTokenizer(), f"text:{f}", 4, 64, seed=0)
    c = calibration_batch(_CharTokenizer(), f"text:{f}", 4, 64, seed=1)
    assert a.shape == (4, 64) and torch.equal(a, b) and not torch.equal(a, c)
    bos = calibration_batch(_CharTokenizer(), f"text:{f}", 2, 64, seed=0, bos_token_id=1)
    assert bos.shape == (2, 64) and (bos[:, 0] == 1).all()
    with pytest.raises(ConfigError, match="calibration.seqlen"):
        calibration_batch(_CharTokenizer(), f"text:{f}", 2, 10_000, seed=0)


def test_windows_non_overlapping_and_bos():
    ids = torch.arange(10)
    w = make_windows(ids, 4)
    assert w.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    wb = make_windows(ids, 4, bos_token_id=99)
    assert wb.tolist() == [[99, 0, 1, 2], [99, 3, 4, 5], [99, 6, 7, 8]]


def test_perplexity_equals_exp_mean_nll_of_manual_loop(tiny_llama):
    torch.manual_seed(0)
    ids = torch.randint(0, 256, (100,))
    res = perplexity(tiny_llama, ids, seqlen=16, limit_windows=3)
    # manual: mean token NLL over the first 3 windows
    nlls = []
    with torch.no_grad():
        for w in ids[:48].view(3, 16):
            logits = tiny_llama(w[None]).logits[0, :-1]
            nlls.append(torch.nn.functional.cross_entropy(logits, w[1:], reduction="none"))
    expected = torch.cat(nlls).double().mean().item()
    assert res.n_tokens == 45 and res.n_windows == 3 and res.total_windows == 6
    assert math.isclose(res.nll, expected, rel_tol=1e-6)
    assert math.isclose(res.ppl, math.exp(expected), rel_tol=1e-6)
    # a random model on a 256 vocab is near-uniform: ppl close to 256
    assert 150 < res.ppl < 400
    with pytest.raises(ConfigError, match="limit_windows"):
        perplexity(tiny_llama, ids, seqlen=16, limit_windows=0)


@pytest.mark.slow
def test_offline_model_loads_fast_and_has_expected_perplexity(offline_model):
    assert offline_model.family.name == "llama"
    assert offline_model.load_seconds < 10
    assert len(prunable_matrices(offline_model.model)) == 30 * 7
    ids = tokenize_text(offline_model.tokenizer, load_text("wiki", "test"))
    assert 250_000 < ids.numel() < 450_000
    res = perplexity(offline_model.model, ids, seqlen=512, limit_windows=4, dataset="wiki")
    assert 10 < res.ppl < 35, res


def test_corpora_manifest_decides_reuse(tmp_path):
    """Prepared corpora are reused only when this code's recipe made exactly those files; a cache
    written by other cleaning code (no manifest, another recipe, edited files) is rebuilt."""
    import json

    from pruning.text.corpora import CORPUS_FILES, MANIFEST, _current, corpus_fingerprints, corpus_recipe

    targets = {name: tmp_path / f"{name}.txt" for name in CORPUS_FILES}
    for name, path in targets.items():
        path.write_text(f"text of {name}\n")
    assert not _current(targets) and corpus_fingerprints(tmp_path) == {}  # no manifest: rebuild
    files = {name: {"sha256": str(i) * 64, "bytes": p.stat().st_size} for i, (name, p) in enumerate(targets.items())}
    manifest = {"recipe": corpus_recipe(), "files": files}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert _current(targets)
    assert corpus_fingerprints(tmp_path) == {name: str(i) * 16 for i, name in enumerate(CORPUS_FILES)}
    assert corpus_fingerprints(tmp_path)["wiki.test"] == "0" * 16 and "wiki.validation" in CORPUS_FILES
    targets["lee"].write_text("edited by hand, longer\n")
    assert not _current(targets)
    targets["lee"].write_text("text of lee\n")
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "recipe": "0123456789abcdef"}))
    assert not _current(targets)  # older cleaning code
    targets["wiki.test"].unlink()
    assert not _current(targets)


def test_prepared_corpora_match_their_manifest():
    """The corpora the tests use were made by this code (set-up writes the manifest)."""
    import hashlib

    from pruning.text.corpora import CORPUS_FILES, corpus_recipe, prepare_offline_corpora, read_manifest

    paths = prepare_offline_corpora()
    manifest = read_manifest()
    assert manifest["recipe"] == corpus_recipe() and set(manifest["files"]) == set(CORPUS_FILES)
    for name, path in paths.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == manifest["files"][name]["sha256"]
