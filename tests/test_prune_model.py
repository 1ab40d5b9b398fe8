"""prune_model / owl_outlier_ratios / the prune CLI on tiny models; one slow test on SmolLM2."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

import pruning.run.prune as prune_mod
from pruning.errors import ConfigError
from pruning.model.families import family_for, prunable_matrices
from pruning.methods import wanda_mask
from pruning.model.load import LoadedModel, ModelSource, model_fingerprint
from pruning.run.prune import TABLE_COLUMNS, owl_outlier_ratios, prune_model, uniform_sparsity


def as_loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "memory", "tiny"), "test", 0.0)


def calib(nsamples: int = 2, seqlen: int = 16, vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (nsamples, seqlen), generator=torch.Generator().manual_seed(0))


def groups_per_matrix(method: str, shape: tuple[int, int], blocksize: int) -> int:
    """Comparison groups: whole matrix (magnitude), rows (Wanda), column blocks (SparseGPT)."""
    return {"magnitude": 1, "wanda": shape[0], "sparsegpt": math.ceil(shape[1] / blocksize)}[method]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_per_matrix_sparsity_is_reached_within_one_element_per_group(tiny_llama: nn.Module, method: str) -> None:
    loaded = as_loaded(tiny_llama)
    refs = prunable_matrices(tiny_llama)
    # a non-uniform allocation: every matrix its own sparsity, one matrix left out (stays dense)
    request = {ref.name: round(0.13 + 0.05 * k, 2) for k, ref in enumerate(refs[:-1])}
    table = prune_model(loaded, method, request, calib(), blocksize=32)
    assert list(table.columns) == TABLE_COLUMNS
    assert table.name.tolist() == [ref.name for ref in refs]
    for ref, row in zip(refs, table.itertuples(), strict=True):
        zeros = int((ref.module.weight == 0).sum())
        assert row.sparsity_achieved == zeros / ref.numel
        assert row.sparsity_target == request.get(ref.name, 0.0)
        slack = 0.5 * groups_per_matrix(method, ref.shape, 32)
        assert abs(zeros - row.sparsity_target * ref.numel) <= slack + 1e-6, (ref.name, zeros, row.sparsity_target)
    assert table.sparsity_achieved.iloc[-1] == 0.0


def test_wanda_rows_each_lose_the_requested_count(tiny_llama: nn.Module) -> None:
    table = prune_model(as_loaded(tiny_llama), "wanda", uniform_sparsity(as_loaded(tiny_llama), 0.25), calib())
    assert (table.sparsity_achieved == 0.25).all()
    for ref in prunable_matrices(tiny_llama):
        per_row = (ref.module.weight == 0).sum(dim=1)
        assert torch.all(per_row == ref.shape[1] // 4), ref.name


def test_wanda_uses_the_block_inputs_it_measured(tiny_llama: nn.Module) -> None:
    """Block 0's q_proj mask equals the kernel's mask on activation norms measured directly."""
    ids = calib()
    q0 = tiny_llama.model.layers[0].self_attn.q_proj
    seen: list[torch.Tensor] = []
    handle = q0.register_forward_hook(lambda _m, i, _o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    handle.remove()
    expected = wanda_mask(q0.weight, torch.cat(seen).norm(dim=0), 0.5)
    prune_model(as_loaded(tiny_llama), "wanda", {"model.layers.0.self_attn.q_proj": 0.5}, ids)
    assert torch.equal(q0.weight == 0, expected)


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_nm_through_prune_model(tiny_llama: nn.Module, method: str) -> None:
    loaded = as_loaded(tiny_llama)
    table = prune_model(loaded, method, uniform_sparsity(loaded, 0.5), calib(), nm="2:4")
    assert (table.sparsity_achieved == 0.5).all()
    for ref in prunable_matrices(tiny_llama):
        groups = (ref.module.weight == 0).reshape(ref.shape[0], -1, 4).sum(-1)
        assert torch.all(groups == 2), ref.name


BAD_REQUESTS = [
    ({"sparsity": 1.0}, "[0, 1)"),
    ({"sparsity": -0.1}, "[0, 1)"),
    ({"sparsity": float("nan")}, "[0, 1)"),
    ({"nm": "4:4"}, "0 < N < M"),
    ({"nm": "5:4"}, "0 < N < M"),
    ({"nm": "2:3"}, "divisible by M=3"),  # 64 and 128 inputs are not multiples of 3
    ({"nm": "2:4", "sparsity": 0.7}, "conflicts with N:M"),
    ({"method": "obs"}, "accepted: magnitude, wanda, sparsegpt"),
    ({"method": "sparsegpt", "nm": "4:8", "blocksize": 20}, "multiple of M=8"),
    ({"percdamp": 0.0}, "percdamp"),
    ({"extra_name": "model.layers.7.self_attn.q_proj"}, "'model.layers.7.self_attn.q_proj'"),
]


@pytest.mark.parametrize("bad,message", BAD_REQUESTS)
def test_bad_requests_fail_before_any_work(tiny_llama: nn.Module, monkeypatch: pytest.MonkeyPatch, bad: dict, message: str) -> None:
    loaded = as_loaded(tiny_llama)
    before = model_fingerprint(tiny_llama)

    def no_calibration(*_a, **_k):
        raise AssertionError("calibration started before validation")

    monkeypatch.setattr(prune_mod, "calibrate_blocks", no_calibration)
    request = uniform_sparsity(loaded, bad.get("sparsity", 0.5))
    if "extra_name" in bad:
        request[bad["extra_name"]] = 0.5
    with pytest.raises(ConfigError) as info:
        prune_model(
            loaded, bad.get("method", "wanda"), request, calib(), nm=bad.get("nm"),
            blocksize=bad.get("blocksize", 128), percdamp=bad.get("percdamp", 0.01),
        )
    assert message in str(info.value)
    assert model_fingerprint(tiny_llama) == before


def test_owl_outlier_ratios_dense_and_unmodified(tiny_llama: nn.Module) -> None:
    ids = calib()
    with torch.no_grad():  # plant an outlier input channel in block 1's weights
        tiny_llama.model.layers[1].mlp.down_proj.weight[:, 3] *= 50.0
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    ratios = owl_outlier_ratios(as_loaded(tiny_llama), ids, M=5.0)
    assert sorted(ratios) == [0, 1]
    assert all(0.0 <= r < 1.0 for r in ratios.values())
    assert ratios[1] > ratios[0]
    # block 0 by hand: Wanda scores of its seven matrices from directly measured inputs, one union mean
    refs = [ref for ref in prunable_matrices(tiny_llama) if ref.block == 0]
    seen: dict[str, list[torch.Tensor]] = {ref.name: [] for ref in refs}
    handles = [ref.module.register_forward_hook(lambda _m, i, _o, n=ref.name: seen[n].append(i[0].reshape(-1, i[0].shape[-1])))
               for ref in refs]
    with torch.no_grad():
        tiny_llama(input_ids=ids)
    for h in handles:
        h.remove()
    scores = [ref.module.weight.abs() * torch.cat(seen[ref.name]).norm(dim=0) for ref in refs]
    union = torch.cat([s.reshape(-1) for s in scores])
    assert ratios[0] == pytest.approx(float((union > 5.0 * union.mean()).float().mean()), abs=1e-6)
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())  # dense model untouched
    with pytest.raises(ConfigError):
        owl_outlier_ratios(as_loaded(tiny_llama), ids, M=0.0)


def test_prune_cli_on_a_tiny_local_model(tmp_path, capsys) -> None:
    """The CLI end to end: local model dir (tiny random LLaMA + the offline tokenizer), Wanda 2:4,
    perplexity on one window, saved copy that reloads with the same zeros."""
    from transformers import AutoTokenizer

    from pruning.cli import main
    from pruning.model.load import alias_dir, load_model, save_model
    from pruning.model.synthetic import random_llama

    if not (alias_dir("smollm2-135m") / "config.json").is_file():
        pytest.skip("offline model not prepared (python -m pruning fetch)")
    tokenizer = AutoTokenizer.from_pretrained(alias_dir("smollm2-135m"))
    model = random_llama(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=len(tokenizer), seed=0)
    save_model(model, tokenizer, tmp_path / "tiny")
    code = main([
        "prune", "--model", str(tmp_path / "tiny"), "--method", "wanda", "--nm", "2:4", "--nsamples", "2",
        "--seqlen", "32", "--eval", "wiki", "--eval-seqlen", "32", "--limit-windows", "1", "--save", str(tmp_path / "out"),
    ])
    out = capsys.readouterr().out
    assert code == 0
    assert "overall sparsity 0.5000" in out and "perplexity on wiki" in out
    reloaded = load_model(str(tmp_path / "out"))
    q = reloaded.model.model.layers[1].self_attn.q_proj.weight
    assert torch.all((q == 0).reshape(q.shape[0], -1, 4).sum(-1) == 2)
    assert main(["prune", "--model", str(tmp_path / "tiny"), "--sparsity", "1.5", "--eval", "none"]) == 2


@pytest.mark.slow
def test_smollm2_wanda_and_sparsegpt_far_below_magnitude(offline_model: LoadedModel) -> None:
    """50% uniform on the real SmolLM2-135M: finite perplexities, Wanda and SparseGPT both below a third
    of magnitude's and within 15 % of each other. Which of the two is lower is not a property: they
    are within 1 % at 50 % in the Wanda paper (LLaMA-7B, WikiText-2: SparseGPT 7.22, Wanda 7.26), and
    on 4 windows of 256 tokens here the order follows the CPU's float kernels (2026-12-01, AMD EPYC:
    SparseGPT 63.20, Wanda 61.46, magnitude 555.7; the other way round where this test was written).
    SparseGPT's exactness is tested against the reference code (tests/test_sparsegpt_fast.py)."""
    from pruning.text.data import calibration_batch, load_text, tokenize_text
    from pruning.evaluation.perplexity import perplexity
    ids = calibration_batch(offline_model.tokenizer, "wiki", nsamples=32, seqlen=128, seed=0)
    test = tokenize_text(offline_model.tokenizer, load_text("wiki", "test"))
    ppl: dict[str, float] = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        loaded = dataclasses.replace(offline_model, model=copy.deepcopy(offline_model.model))
        prune_model(loaded, method, uniform_sparsity(loaded, 0.5), ids)
        ppl[method] = perplexity(loaded.model, test, seqlen=256, limit_windows=4).ppl
    assert all(math.isfinite(v) for v in ppl.values()), ppl
    assert max(ppl["wanda"], ppl["sparsegpt"]) < ppl["magnitude"] / 3, ppl
    assert abs(ppl["sparsegpt"] / ppl["wanda"] - 1.0) < 0.15, ppl


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_blocks_without_targets_are_skipped_exactly(method: str) -> None:
    """Only blocks with something to prune get statistics and nothing after the last of them runs
    (a probe of block b runs blocks 0..b): the weights and the table equal the full protocol's, which
    runs every block with hooks (calibrate_blocks with statistics_for=None, stop_after=None)."""
    from pruning.calibration.sequential import calibrate_blocks
    from pruning.model.synthetic import random_llama

    model = random_llama(hidden=32, layers=4, intermediate=64, heads=4, kv_heads=2, vocab=256, seed=1)
    reference = copy.deepcopy(model)
    targets = {ref.name: 0.5 for ref in prunable_matrices(model) if ref.block == 1}
    targets["model.layers.2.mlp.down_proj"] = 0.3
    ids = calib(nsamples=3, seqlen=16)
    seen: list[tuple[int, int]] = []
    table = prune_model(as_loaded(model), method, targets, ids, progress=lambda d, n: seen.append((d, n)))
    assert seen[-1] == (3, 3)  # blocks 0, 1, 2 ran; block 3 did not

    rows: list[dict] = []
    full = {ref.name: targets.get(ref.name, 0.0) for ref in prunable_matrices(reference)}
    calibrate_blocks(as_loaded(reference), ids, prune_mod.block_pruner(method, full, None, 128, 0.01, rows),
                     collect_hessian=method == "sparsegpt")
    for (name, p), (_, q) in zip(model.named_parameters(), reference.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    expected = [r["sparsity_achieved"] for r in rows]
    assert table["sparsity_achieved"].tolist() == expected
    assert table.loc[table["name"].str.contains("layers.3."), "sparsity_achieved"].eq(0.0).all()
