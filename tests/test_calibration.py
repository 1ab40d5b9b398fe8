"""Block-sequential calibration: captured inputs, per-block kwargs, statistics and the pruned feed."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from torch import nn

from pruning.calibration.sequential import BlockContext, calibrate_blocks
from pruning.model.families import decoder_layers, family_for, prunable_matrices
from pruning.model.load import LoadedModel, ModelSource
from pruning.model.placement import Compute


def as_loaded(model: nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "memory", "tiny"), "test", 0.0)


def calib_ids(vocab: int, nsamples: int = 3, seqlen: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (nsamples, seqlen), generator=torch.Generator().manual_seed(seed))


def block_outputs(model: nn.Module, ids: torch.Tensor, **kwargs) -> dict[int, torch.Tensor]:
    """Outputs of each block as fed forward by calibrate_blocks ``(nsamples, seqlen, hidden)``."""
    outs: dict[int, list[torch.Tensor]] = {}

    def on_block(ctx: BlockContext) -> None:
        outs[ctx.index] = []
        ctx.block.register_forward_hook(lambda _m, _i, o, idx=ctx.index: outs[idx].append(o if torch.is_tensor(o) else o[0]))

    calibrate_blocks(as_loaded(model), ids, on_block, **kwargs)
    for block in decoder_layers(model):
        block._forward_hooks.clear()
    # hooks added in on_block see only the pass after it: the outputs that are fed forward
    return {i: torch.cat(v) for i, v in outs.items()}


def assert_matches_hidden_states(model: nn.Module, ids: torch.Tensor, got: dict[int, torch.Tensor]) -> None:
    with torch.no_grad():
        ref = model(input_ids=ids, output_hidden_states=True).hidden_states  # embeddings, block 0.., last normed
    n = len(got)
    for i in range(n - 1):
        torch.testing.assert_close(got[i], ref[i + 1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.model.norm(got[n - 1]), ref[n], rtol=1e-5, atol=1e-5)


def test_block_sequential_outputs_equal_model_hidden_states_gqa(tiny_llama: nn.Module) -> None:
    assert tiny_llama.config.num_key_value_heads < tiny_llama.config.num_attention_heads  # GQA
    ids = calib_ids(256)
    assert_matches_hidden_states(tiny_llama, ids, block_outputs(tiny_llama, ids))


@pytest.mark.parametrize("batch_size", [2, 8])
def test_batched_block_calls_match_the_model_and_count_calls(tiny_llama: nn.Module, batch_size: int) -> None:
    """Several samples per block call (the last chunk short: 3 samples in batches of 2) give the
    model's own hidden states, the same statistics up to rounding, and fewer calls."""
    ids = calib_ids(256, nsamples=3)
    batched = Compute("cpu", offload=False, batch_size=batch_size)
    assert_matches_hidden_states(tiny_llama, ids, block_outputs(tiny_llama, ids, compute=batched))
    calls: list[int] = []  # a pre-hook: the statistics pass stops inside the block (stats_exit)
    handle = tiny_llama.model.layers[1].register_forward_pre_hook(lambda _m, i: calls.append(i[0].shape[0]))
    stats: dict[int, dict[str, torch.Tensor]] = {1: {}, batch_size: {}}
    for b in stats:
        calibrate_blocks(as_loaded(tiny_llama), ids,
                         lambda ctx, b=b: stats[b].update({k: v.act_sq_sum.clone() for k, v in ctx.stats.items()}),
                         compute=Compute("cpu", offload=False, batch_size=b))
    handle.remove()
    per_pass = [min(batch_size, 3 - s) for s in range(0, 3, batch_size)]
    assert calls == [1, 1, 1] * 2 + per_pass * 2  # two passes (statistics, then the pruned feed)
    for name, value in stats[1].items():
        torch.testing.assert_close(stats[batch_size][name], value, rtol=1e-5, atol=1e-6)


def test_batched_calls_with_per_block_masks() -> None:
    model = tiny_gemma3()  # sliding-window and full-attention masks captured for one sample, broadcast
    ids = calib_ids(128, nsamples=3, seqlen=12)
    batched = Compute("cpu", offload=False, batch_size=2)
    assert_matches_hidden_states(model, ids, block_outputs(model, ids, compute=batched))


def test_offload_gives_the_same_outputs(tiny_llama: nn.Module) -> None:
    ids = calib_ids(256, nsamples=2)
    plain = block_outputs(tiny_llama, ids)
    offloaded = block_outputs(tiny_llama, ids, compute=Compute("cpu", offload=True))
    for i in plain:
        torch.testing.assert_close(plain[i], offloaded[i])


def tiny_gemma3() -> nn.Module:
    """Gemma3 with sliding-window (4 tokens) and full-attention blocks: block kwargs differ per block."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, sliding_window=4, max_position_embeddings=64,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"], attn_implementation="eager",
    )
    torch.manual_seed(0)
    return Gemma3ForCausalLM(config).eval()


def test_per_block_kwargs_for_mixed_attention_family() -> None:
    model = tiny_gemma3()
    ids = calib_ids(128, nsamples=2, seqlen=12)
    assert_matches_hidden_states(model, ids, block_outputs(model, ids))


def direct_inputs(model: nn.Module, ids: torch.Tensor, module: nn.Linear) -> torch.Tensor:
    """Inputs ``(tokens, in)`` of ``module`` in an ordinary forward pass of the whole batch."""
    seen: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, i, _o: seen.append(i[0].reshape(-1, i[0].shape[-1])))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return torch.cat(seen)


def test_hessian_and_activation_norms_equal_direct_computation(tiny_llama: nn.Module) -> None:
    ids = calib_ids(256, nsamples=3, seqlen=16)
    captured: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
    shared: list[bool] = []

    def on_block(ctx: BlockContext) -> None:
        for name, st in ctx.stats.items():
            captured[name] = (st.act_sq_sum.clone(), st.hessian.clone(), st.n_tokens)
        by_type = {ref.matrix_type: ctx.stats[ref.name] for ref in ctx.matrices}
        shared.append(by_type["q"].hessian is by_type["v"].hessian and by_type["gate"].hessian is by_type["up"].hessian)

    calibrate_blocks(as_loaded(tiny_llama), ids, on_block)
    assert shared == [True, True]
    refs = prunable_matrices(tiny_llama)
    assert set(captured) == {ref.name for ref in refs}
    for ref in refs:
        X = direct_inputs(tiny_llama, ids, ref.module).double()  # (N, in)
        act_sq_sum, H, n = captured[ref.name]
        assert n == X.shape[0] == 48
        torch.testing.assert_close(H.double(), 2.0 / n * X.t() @ X, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(act_sq_sum.double(), (X**2).sum(0), rtol=1e-4, atol=1e-5)


def test_next_block_sees_the_pruned_outputs(tiny_llama: nn.Module) -> None:
    """Statistics of block 1 come from the pruned block 0 (the sequential protocol), not the dense one."""
    ids = calib_ids(256, nsamples=2)
    q1 = tiny_llama.model.layers[1].self_attn.q_proj
    dense_sq = (direct_inputs(tiny_llama, ids, q1) ** 2).sum(0)
    reference = copy.deepcopy(tiny_llama)
    with torch.no_grad():  # prune block 0 of the reference model up front, the same way
        reference.model.layers[0].self_attn.o_proj.weight[:, ::2] = 0
    pruned_sq = (direct_inputs(reference, ids, reference.model.layers[1].self_attn.q_proj) ** 2).sum(0)
    seen: dict[int, torch.Tensor] = {}

    def on_block(ctx: BlockContext) -> None:
        if ctx.index == 0:
            with torch.no_grad():
                ctx.block.self_attn.o_proj.weight[:, ::2] = 0
        seen[ctx.index] = ctx.stats[f"model.layers.{ctx.index}.self_attn.q_proj"].act_sq_sum.clone()

    calibrate_blocks(as_loaded(tiny_llama), ids, on_block)
    torch.testing.assert_close(seen[1], pruned_sq, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(seen[1], dense_sq, rtol=1e-3)


def test_dense_measurement_skips_recompute_and_stats_are_freed(tiny_llama: nn.Module) -> None:
    ids = calib_ids(256, nsamples=2)
    calls: list[int] = []
    contexts: list[BlockContext] = []
    handle = tiny_llama.model.layers[1].register_forward_hook(lambda *_: calls.append(1))

    def on_block(ctx: BlockContext) -> None:
        contexts.append(ctx)
        assert ctx.stats and all(st.hessian is None for st in ctx.stats.values())

    calibrate_blocks(as_loaded(tiny_llama), ids, on_block, collect_hessian=False, modifies_blocks=False)
    handle.remove()
    assert len(calls) == 2  # one pass per sample, no recompute
    assert all(ctx.stats == {} for ctx in contexts)


def test_bad_calibration_ids(tiny_llama: nn.Module) -> None:
    with pytest.raises(ValueError, match="LongTensor"):
        calibrate_blocks(as_loaded(tiny_llama), torch.zeros(2, 8), lambda ctx: None)
    for bad in (0, -2, 1.5):
        with pytest.raises(ValueError, match=f"batch_size must be an integer >= 1, got {bad}"):
            calibrate_blocks(as_loaded(tiny_llama), calib_ids(256), lambda ctx: None,
                             compute=Compute("cpu", offload=False, batch_size=bad))


def _prune_with(model: nn.Module, method: str, stats_exit: str | None | object = "default",
                batch_size: int = 1) -> tuple[nn.Module, list[int]]:
    """A copy of ``model`` pruned at 60 % with ``method``, its family's ``stats_exit`` replaced unless
    "default"; returns it and the number of rows ``down_proj`` of block 1 multiplied per call."""
    from pruning.run.prune import prune_model

    pruned = copy.deepcopy(model)
    loaded = as_loaded(pruned)
    if stats_exit != "default":
        loaded = dataclasses.replace(loaded, family=dataclasses.replace(loaded.family, stats_exit=stats_exit))
    down = pruned.model.layers[1].mlp.down_proj
    calls: list[int] = []
    handle = down.register_forward_hook(lambda _m, i, _o: calls.append(i[0].shape[0]))
    names = {ref.name: 0.6 for ref in prunable_matrices(pruned)}
    prune_model(loaded, method, names, calib_ids(pruned.config.vocab_size, nsamples=3, seqlen=12),
                compute=Compute("cpu", offload=False, batch_size=batch_size))
    handle.remove()
    return pruned, calls


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_statistics_pass_stops_at_the_last_matrix_and_prunes_the_same(tiny_llama: nn.Module, method: str,
                                                                     family: str) -> None:
    """The statistics pass of a pruned block ends once down_proj's input is recorded (its GEMM and the
    residual never run): the pruned weights equal those of the whole pass bit for bit, and down_proj
    runs only in the pass that feeds the pruned outputs forward (3 samples, one per call)."""
    model = tiny_llama if family == "llama" else tiny_gemma3()
    assert as_loaded(model).family.stats_exit == "down"
    stopped, calls_stopped = _prune_with(model, method)
    whole, calls_whole = _prune_with(model, method, stats_exit=None)
    assert calls_stopped == [1, 1, 1] and calls_whole == [1, 1, 1] * 2
    zeros = 0
    for (name, a), (_, b) in zip(stopped.named_parameters(), whole.named_parameters(), strict=True):
        assert torch.equal(a, b), name
        zeros += int((a == 0).sum())
    assert zeros > 0.5 * sum(ref.module.weight.numel() for ref in prunable_matrices(stopped))
    batched, calls_batched = _prune_with(model, method, batch_size=2)
    assert calls_batched == [2, 1]  # batched calls stop the same way


def test_a_stats_exit_that_is_not_last_fails_naming_the_starved_matrix(tiny_llama: nn.Module) -> None:
    """Stopping at gate/up leaves down_proj without tokens: the run fails loudly, never prunes from
    empty statistics."""
    with pytest.raises(RuntimeError, match=r"mlp\.down_proj saw no input tokens.*stats_exit"):
        _prune_with(tiny_llama, "wanda", stats_exit="gate")
