"""Prune a sharded safetensors checkpoint block by block without ever holding the whole model.

For models larger than host RAM or the GPU (LLaMA-70B: 140 GB in bf16). The protocol is the
block-sequential one of Frantar & Alistarh 2023 (SparseGPT) and Sun et al. 2023 (Wanda), with the
same capture (:func:`pruning.calibration.block_capture.capture_block_inputs`), block step
(:func:`pruning.calibration.sequential.run_block`) and pruning (:func:`pruning.run.prune.block_pruner`) as
:func:`pruning.run.prune.prune_model`; only where the weights come from and go to differs:

1. the model skeleton is built on the ``meta`` device from ``config.json``; only the modules outside
   the decoder blocks (embeddings, final norm, LM head, rotary tables) are materialised, from the
   shards, on the compute device;
2. the block-0 inputs are captured as usual (blocks are never called during capture);
3. for each block: its tensors are read from the shards straight to the device (safetensors
   ``safe_open(device=...)``; the kernel is asked to read the next block's bytes meanwhile),
   calibrated and pruned, handed to the output shards (same file names and index as the input,
   Hugging Face layout), and freed (back to ``meta``). A background thread writes the shards
   (:class:`ShardWriter`), so a block costs its load and compute, and the write only where the
   writer falls behind (issue 32).

Peak device memory: embeddings + LM head, two activation buffers ``(nsamples, seqlen, hidden)``, one
block and its statistics — for LLaMA-70B with 128 x 2048 tokens in bf16: 1 + 8 + 1.7 GiB plus, with
SparseGPT, the Hessians (3.3 GiB for the 28672-wide down projection, factored in place). Host memory
for the output: the pinned copies of at most ``max_pending_shards`` + 1 shards (:class:`ShardWriter`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor, nn

from pruning.run.shards import INDEX, ShardIndex, ShardWriter, stage_on_host, tensor_byte_ranges, write_shard
from pruning.calibration.block_capture import capture_block_inputs
from pruning.calibration.sequential import run_block
from pruning.model.families import block_matrices, decoder_layers, family_for_model_type
from pruning.methods.registry import method_names, needs_calibration, needs_hessian
from pruning.run.prune import TABLE_COLUMNS, block_pruner, validate_request

log = logging.getLogger(__name__)

__all__ = ["INDEX", "ShardIndex", "ShardWriter", "StreamReport", "stage_on_host", "stream_prune",
           "tensor_byte_ranges", "write_random_checkpoint", "write_shard"]


def _set_tensor(root: nn.Module, name: str, value: Tensor) -> None:
    """Replace parameter or buffer ``name`` (dotted, relative to ``root``) by ``value``."""
    *path, leaf = name.split(".")
    module = root
    for part in path:
        module = getattr(module, part)
    if leaf in module._parameters:
        module._parameters[leaf] = nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value


@dataclass
class StreamReport:
    """What one streamed pruning did: the per-matrix table and its costs (seconds, per block unless
    said otherwise). ``seconds_per_block`` = load + compute + write wait (+ freeing the block): the
    shards are written by the :class:`ShardWriter` thread meanwhile, so write time shows here only
    where the writer falls behind (``write_wait_seconds``)."""

    table: pd.DataFrame
    seconds_per_block: list[float] = field(default_factory=list)
    load_seconds: list[float] = field(default_factory=list)  # the block's tensors, shards -> device
    compute_seconds: list[float] = field(default_factory=list)  # calibration + pruning, device synchronised
    write_wait_seconds: list[float] = field(default_factory=list)  # handing the block to the writer: copies + wait
    final_write_wait_seconds: float = 0.0  # after the last block: the rest of the model and the last shards
    shard_write_seconds: dict[str, float] = field(default_factory=dict)  # per shard, in the writer thread
    capture_seconds: float = 0.0
    peak_gpu_bytes: int | None = None
    peak_pinned_bytes: int | None = None  # pinned host memory of the staging copies (CUDA)


def _skeleton(config, device: torch.device, index: ShardIndex) -> nn.Module:
    """The model on ``meta`` with everything outside the decoder blocks loaded onto ``device``."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=config.dtype)
    model.eval()
    block_prefix = "model.layers."
    outside = [n for n, _ in model.named_parameters() if not n.startswith(block_prefix)]
    tied = getattr(config, "tie_word_embeddings", False)
    wanted = [n for n in outside if not (tied and n == "lm_head.weight")]
    for name, tensor in index.load(wanted, device).items():
        _set_tensor(model, name, tensor)
    if tied:
        model.tie_weights()
    for name, module in model.named_modules():  # non-persistent buffers (rotary tables): rebuilt on device
        if name.startswith(block_prefix.rstrip(".")):
            continue
        if any(b.is_meta for b in module.buffers(recurse=False)):
            if not hasattr(module, "inv_freq"):
                raise RuntimeError(f"streaming: module {name!r} ({type(module).__name__}) has buffers outside the checkpoint")
            with torch.device(device):  # the rotary module computes its tables at construction
                rebuilt = type(module)(config)
            parent_name, _, leaf = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, leaf, rebuilt)
    return model


@torch.no_grad()
def stream_prune(
    source_dir: str | Path,
    out_dir: str | Path,
    method: str,
    sparsity: float,
    calib_ids: Tensor,
    *,
    device: str | torch.device = "cpu",
    nm: tuple[int, int] | str | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    batch_size: int = 1,
    progress: Callable[[int, int], None] | None = None,
    max_pending_shards: int = 2,
) -> StreamReport:
    """Prune every matrix of the checkpoint in ``source_dir`` at uniform ``sparsity`` with a
    registered method that needs calibration statistics (Wanda, Sun et al. 2023; SparseGPT, Frantar &
    Alistarh 2023), one block in device memory at a time, and
    write the pruned checkpoint (same shards, index and config) to ``out_dir``.

    calib_ids: LongTensor ``(nsamples, seqlen)``. Returns a :class:`StreamReport` whose table has the
    columns of :func:`pruning.run.prune.prune_model` (``block, matrix_type, name, numel,
    sparsity_target, sparsity_achieved``).

    The output shards are written by a background thread while the next blocks compute
    (:class:`ShardWriter`; ``max_pending_shards`` bounds the shards waiting in host memory, 0 writes
    synchronously); the output is byte for byte the same either way.
    """
    from transformers import AutoConfig

    calibrated = [name for name in method_names(pruning_only=True) if needs_calibration(name)]
    if method not in calibrated:
        raise ValueError(f"streaming: method {method!r} is invalid; accepted: {', '.join(calibrated)}")
    dev = torch.device(device)
    source, out = Path(source_dir), Path(out_dir)
    config = AutoConfig.from_pretrained(source)
    family = family_for_model_type(config.model_type)
    index = ShardIndex(source)
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(dev)
        if hasattr(torch.cuda, "reset_peak_host_memory_stats"):
            torch.cuda.reset_peak_host_memory_stats()
    model = _skeleton(config, dev, index)
    layers = decoder_layers(model, family)
    n_blocks = len(layers)
    refs = [ref for i, block in enumerate(layers) for ref in block_matrices(block, i, family)]
    targets = {ref.name: float(sparsity) for ref in refs}
    nm_pair = validate_request(refs, method, targets, nm, blocksize, percdamp)
    if nm_pair is not None:
        targets = {name: nm_pair[0] / nm_pair[1] for name in targets}
    t0 = time.perf_counter()
    inps, block_kwargs = capture_block_inputs(model, layers, calib_ids, dev)  # (nsamples, seqlen, hidden)
    outs = torch.empty_like(inps)
    report = StreamReport(pd.DataFrame(columns=TABLE_COLUMNS), capture_seconds=time.perf_counter() - t0)
    rows: list[dict] = []
    on_block = block_pruner(method, targets, nm_pair, blocksize, percdamp, rows)
    prefix = family.layers_path
    with ShardWriter(index, out, max_pending=max_pending_shards) as writer:  # on an error: no thread left behind
        for i in range(n_blocks):
            t_block = time.perf_counter()
            block = layers[i]
            names = [f"{prefix}.{i}.{n}" for n, _ in block.named_parameters()]
            tensors = index.load(names, dev)
            if i + 1 < n_blocks:  # the next block's bytes come from disk while this one computes
                index.read_ahead([f"{prefix}.{i + 1}.{n}" for n, _ in layers[i + 1].named_parameters()])
            for name, t in tensors.items():
                _set_tensor(block, name[len(f"{prefix}.{i}.") :], t)
            t_compute = time.perf_counter()
            report.load_seconds.append(t_compute - t_block)
            run_block(i, n_blocks, block, family, inps, outs, block_kwargs[i], on_block, dev,
                      collect_hessian=needs_hessian(method), batch_size=batch_size)
            if cuda:
                torch.cuda.synchronize(dev)
            report.compute_seconds.append(time.perf_counter() - t_compute)
            # device -> pinned host copies queued on the stream; the writer thread writes the shard
            report.write_wait_seconds.append(writer.add({f"{prefix}.{i}.{n}": p for n, p in block.named_parameters()}))
            block.to_empty(device="meta")  # frees the block's device memory (after the copies, in stream order)
            del tensors
            inps, outs = outs, inps
            report.seconds_per_block.append(time.perf_counter() - t_block)
            log.info("streamed block %d/%d: %.2f s (load %.2f s, compute %.2f s, write wait %.2f s)", i + 1,
                     n_blocks, report.seconds_per_block[-1], report.load_seconds[-1], report.compute_seconds[-1],
                     report.write_wait_seconds[-1])
            if progress is not None:
                progress(i + 1, n_blocks)
        del inps, outs, block_kwargs
        outside = {n: p for n, p in model.named_parameters()
                   if not n.startswith(prefix + ".") and n in index.weight_map}
        report.final_write_wait_seconds = writer.add(outside) + writer.close()
    report.shard_write_seconds = dict(writer.write_seconds)
    for extra in source.iterdir():  # config, generation config, tokenizer files
        if extra.is_file() and not extra.name.endswith(".safetensors") and extra.name != INDEX:
            shutil.copy2(extra, out / extra.name)
    if cuda:
        report.peak_gpu_bytes = torch.cuda.max_memory_allocated(dev)
        if hasattr(torch.cuda, "host_memory_stats"):
            report.peak_pinned_bytes = torch.cuda.host_memory_stats().get("allocated_bytes.peak")
    report.table = pd.DataFrame(rows, columns=TABLE_COLUMNS)
    log.info("streamed %d blocks: %.2f s/block compute, %.2f s/block write wait, then %.2f s final write wait",
             n_blocks, sum(report.compute_seconds) / n_blocks, sum(report.write_wait_seconds) / n_blocks,
             report.final_write_wait_seconds)
    return report


def write_random_checkpoint(
    out_dir: str | Path,
    *,
    hidden: int,
    intermediate: int,
    heads: int,
    kv_heads: int,
    blocks: int,
    vocab: int = 32000,
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    max_positions: int = 4096,
    init_device: str | torch.device = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """A random-weight LLaMA checkpoint in the Hugging Face sharded layout, written block by block
    (one shard per block, one for the embeddings, one for norm + LM head; ``config.json`` with
    ``num_hidden_layers=blocks``; ``model.safetensors.index.json``). LLaMA-70B shape: hidden 8192,
    intermediate 28672, 64 heads, 8 KV heads, vocab 32000. Weights N(0, 0.02), norms 1 (random
    weights are fair for speed and memory, never for quality)."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=heads, num_key_value_heads=kv_heads,
        num_hidden_layers=blocks, vocab_size=vocab, max_position_embeddings=max_positions, tie_word_embeddings=False,
        dtype=str(dtype).removeprefix("torch."),
    )
    config.save_pretrained(out)
    gen = torch.Generator(device=init_device).manual_seed(seed)
    head_dim = hidden // heads

    def rand(*shape: int) -> Tensor:
        return (torch.randn(*shape, generator=gen, device=init_device) * 0.02).to(dtype).cpu()

    weight_map: dict[str, str] = {}
    total = 0

    def save(tensors: dict[str, Tensor], file: str) -> None:
        nonlocal total
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        weight_map.update({name: file for name in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())

    n_files = blocks + 2
    save({"model.embed_tokens.weight": rand(vocab, hidden)}, f"model-00001-of-{n_files:05d}.safetensors")
    for i in range(blocks):
        p = f"model.layers.{i}."
        save({
            p + "input_layernorm.weight": torch.ones(hidden, dtype=dtype),
            p + "post_attention_layernorm.weight": torch.ones(hidden, dtype=dtype),
            p + "self_attn.q_proj.weight": rand(heads * head_dim, hidden),
            p + "self_attn.k_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.v_proj.weight": rand(kv_heads * head_dim, hidden),
            p + "self_attn.o_proj.weight": rand(hidden, heads * head_dim),
            p + "mlp.gate_proj.weight": rand(intermediate, hidden),
            p + "mlp.up_proj.weight": rand(intermediate, hidden),
            p + "mlp.down_proj.weight": rand(hidden, intermediate),
        }, f"model-{i + 2:05d}-of-{n_files:05d}.safetensors")
        if progress is not None:
            progress(i + 1, blocks)
    save({"model.norm.weight": torch.ones(hidden, dtype=dtype), "lm_head.weight": rand(vocab, hidden)},
         f"model-{n_files:05d}-of-{n_files:05d}.safetensors")
    (out / INDEX).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return out
