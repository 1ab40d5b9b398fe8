"""Pruning Lab beside the reference code, same weights, same calibration tokens, same process (issue 32).

The reference is locuslab/wanda's ``lib/prune.py`` (Sun et al. 2023; its ``prune_sparsegpt`` is
IST-DASLab's SparseGPT at f5c2500), run **unmodified** from a checkout given by ``--repo`` (``scripts/gpu.sh
pack`` carries ``lib/`` and ``LICENSE`` of the checkout in ``/work/.mirror/locuslab+wanda/repo``). Two things
stand between it and today's transformers, and this harness supplies them without touching its code:

* ``lib.data`` loads C4 through ``datasets`` over the network: it is replaced in ``sys.modules`` by a loader
  that returns the benchmark's random tokens (the same ``randint(0, vocab, (nsamples, seqlen))`` with seed 0
  as ``bench/prune.py``), one sample per batch as the reference expects;
* the reference calls a decoder layer with ``attention_mask`` and ``position_ids`` only, while a transformers
  5 LLaMA layer needs ``position_embeddings`` (computed once per forward by the model): each layer is wrapped
  for the run in :class:`RotaryShim`, which computes them from ``position_ids`` with the model's own rotary
  module when they are missing. The wrapper is removed afterwards.

Per method, on the same dense weights: Pruning Lab's ``prune_model`` (uniform sparsity, the configured
placement and calibration batch), then the reference; each timed with CUDA synchronised, peak GPU memory
reset between them, and the masks compared position by position (``mask_agreement``: the fraction of
weights both prune or both keep; Wanda's differ only where float rounding of the two activation norms
— a sum against a running mean — reorders near-equal scores).

    python bench/reference_wanda.py --repo /tmp/wanda-ref --device cuda --methods wanda --sparsity 0.7
    python bench/reference_wanda.py --repo /tmp/wanda-ref --device cuda --methods sparsegpt --layers 4
    python bench/reference_wanda.py --repo /work/.mirror/... --device cpu --layers 2 --hidden 128 \\
        --intermediate 344 --heads 4 --vocab 512 --nsamples 4 --seqlen 64 --dtype float32 --no-write
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from bench._results import emit, markdown_table  # noqa: E402
from bench._shapes import add_shape_args, bench_device, random_model  # noqa: E402
from bench.prune import mask_digest, packed_masks  # noqa: E402
from pruning.model.families import family_for, prunable_matrices  # noqa: E402
from pruning.model.load import LoadedModel, ModelSource  # noqa: E402
from pruning.model.placement import Compute  # noqa: E402
from pruning.run.prune import prune_model, uniform_sparsity  # noqa: E402

log = logging.getLogger("bench.reference_wanda")


class RotaryShim(nn.Module):
    """A decoder layer called the reference's way (``attention_mask``, ``position_ids``): supplies the
    ``position_embeddings`` (cos, sin) a transformers-5 layer needs from the model's rotary module."""

    def __init__(self, layer: nn.Module, rotary: nn.Module) -> None:
        super().__init__()
        self.inner = layer
        self.rotary = [rotary]  # a list: not a submodule (find_layers must see only the layer's linears)

    def forward(self, hidden: torch.Tensor, **kwargs: Any) -> Any:
        if kwargs.get("position_embeddings") is None:
            pos = kwargs.get("position_ids")
            if pos is None:
                pos = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
            kwargs["position_embeddings"] = self.rotary[0](hidden, pos)
        return self.inner(hidden, **kwargs)


def import_reference(repo: Path, calib_ids: torch.Tensor) -> types.ModuleType:
    """``lib.prune`` of the checkout at ``repo``, its ``lib.data`` replaced by a loader of ``calib_ids``."""
    if not (repo / "lib" / "prune.py").is_file():
        raise SystemExit(f"--repo {repo}: no lib/prune.py there; accepted: a locuslab/wanda checkout "
                         "(scripts/gpu.sh pack carries one to /tmp/wanda-ref)")
    data = types.ModuleType("lib.data")

    def get_loaders(name: str, nsamples: int = 128, seed: int = 0, seqlen: int = 2048, tokenizer: Any = None):
        if nsamples > calib_ids.shape[0] or seqlen != calib_ids.shape[1]:
            raise ValueError(f"reference asked for {nsamples} x {seqlen}; the benchmark has {tuple(calib_ids.shape)}")
        return [(calib_ids[i : i + 1], None) for i in range(nsamples)], None

    data.get_loaders = get_loaders  # type: ignore[attr-defined]
    sys.modules["lib.data"] = data
    sys.path.insert(0, str(repo))
    import lib.prune  # noqa: PLC0415  (the reference, imported only here)

    return lib.prune


def zero_fraction(masks: list[np.ndarray], total: int) -> float:
    """Fraction of the ``total`` weights a packed mask prunes."""
    return sum(int(np.unpackbits(m).sum()) for m in masks) / total


def agreement(a: list[np.ndarray], b: list[np.ndarray], total: int) -> float:
    """Fraction of the ``total`` weights on which two packed masks agree."""
    differ = sum(int(np.unpackbits(np.bitwise_xor(x, y)).sum()) for x, y in zip(a, b, strict=True))
    return 1.0 - differ / total


def revision(repo: Path) -> str:
    """The checkout's commit (``REVISION`` written by gpu.sh pack, or git), else ``unknown``."""
    stamp = repo / "REVISION"
    if stamp.is_file():
        return stamp.read_text().strip()[:7]
    try:
        return subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", type=Path, required=True, help="a locuslab/wanda checkout (lib/prune.py)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--methods", default="wanda", help="comma list of wanda, sparsegpt")
    p.add_argument("--sparsity", type=float, default=0.7)
    add_shape_args(p)
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--calib-batch", type=int, default=1, help="Pruning Lab's samples per block call")
    p.add_argument("--section", default="reference_side_by_side", help="RESULTS.md section to write")
    p.add_argument("--json", default=None, help="also write the rows as JSON here")
    p.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = p.parse_args(argv)
    methods = args.methods.split(",")
    if any(m not in ("wanda", "sparsegpt") for m in methods):
        raise SystemExit(f"--methods {args.methods!r}: accepted wanda, sparsegpt (comma list)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = bench_device(args.device)
    cuda = device.type == "cuda"

    model = random_model(args, device, args.seqlen)
    model.seqlen = args.seqlen  # what the reference reads
    model.hf_device_map = {}
    loaded = LoadedModel(model, None, family_for(model), ModelSource("local", "random", "random-llama"), "random", 0.0)
    calib_ids = torch.randint(0, args.vocab, (args.nsamples, args.seqlen), generator=torch.Generator().manual_seed(0))
    reference = import_reference(args.repo, calib_ids)
    if not cuda:  # the reference's SparseGPT synchronises CUDA unconditionally; a no-op for a CPU smoke run
        torch.cuda.synchronize = lambda *_a, **_k: None
    ref_name = f"locuslab/wanda@{revision(args.repo)}"
    dense = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    total = sum(ref.module.weight.numel() for ref in prunable_matrices(model))
    ref_args = types.SimpleNamespace(nsamples=args.nsamples, seed=0, sparsity_ratio=args.sparsity, use_variant=False)
    rows: list[dict] = []

    def timed(fn: Any) -> tuple[float, float]:
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0, torch.cuda.max_memory_allocated(device) / 2**30 if cuda else float("nan")

    for method in methods:
        model.load_state_dict(dense)
        ours_s, ours_peak = timed(lambda: prune_model(
            loaded, method, uniform_sparsity(loaded, args.sparsity), calib_ids,
            compute=Compute(str(device), offload=False, batch_size=args.calib_batch)))
        ours = packed_masks(model)
        rows.append({"method": method, "code": f"Pruning Lab (calibration batch {args.calib_batch})",
                     "blocks": args.layers, "wall_s": ours_s, "s_per_block": ours_s / args.layers,
                     "peak_gpu_GiB": ours_peak, "sparsity": zero_fraction(ours, total), "mask_digest": mask_digest(ours),
                     "mask_agreement": 1.0})
        model.load_state_dict(dense)
        layers = model.model.layers
        for i in range(len(layers)):
            layers[i] = RotaryShim(layers[i], model.model.rotary_emb)
        fn = reference.prune_wanda if method == "wanda" else reference.prune_sparsegpt
        try:
            ref_s, ref_peak = timed(lambda: fn(ref_args, model, None, device))
        finally:
            for i in range(len(layers)):
                layers[i] = layers[i].inner
        theirs = packed_masks(model)
        rows.append({"method": method, "code": ref_name, "blocks": args.layers, "wall_s": ref_s,
                     "s_per_block": ref_s / args.layers, "peak_gpu_GiB": ref_peak, "sparsity": zero_fraction(theirs, total),
                     "mask_digest": mask_digest(theirs), "mask_agreement": agreement(ours, theirs, total)})
        log.info("%s: ours %.2f s, reference %.2f s, masks agree on %.6f", method, ours_s, ref_s, rows[-1]["mask_agreement"])

    shape = (f"{args.layers} blocks x (hidden {args.hidden}, MLP {args.intermediate}, {args.heads} heads), "
             f"vocab {args.vocab}, {args.dtype}")
    body = (f"Random-weight LLaMA ({shape}); {args.nsamples} x {args.seqlen} random calibration tokens (seed 0); "
            f"{args.sparsity:.0%} uniform; device {args.device}, whole model on it. Same weights, same tokens, "
            f"one process: Pruning Lab's prune_model, then the unmodified reference ({ref_name} lib/prune.py; "
            "its data loader replaced by the tokens, its layer calls given the rotary embeddings: "
            "bench/reference_wanda.py). mask_agreement: fraction of weights on which the reference's mask "
            "equals Pruning Lab's; where the sparsities differ, the count rule differs (the reference prunes "
            "int(s·n) per row, Pruning Lab round(s·n): one weight a row where s·n has a fraction of .5 or more; "
            "bench/count_rule.py).\n\n" + markdown_table(rows))
    emit(body, {"rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, args.section, args.json,
         write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
