"""Command-line flags for the shape of a random-weight benchmark model (LLaMA-7B by default)."""

from __future__ import annotations

import argparse

import torch

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def add_shape_args(p: argparse.ArgumentParser) -> None:
    """--layers --hidden --intermediate --heads --vocab --dtype (defaults: LLaMA-7B in float16)."""
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=11008)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--dtype", default="float16", choices=list(DTYPES))


def bench_device(name: str) -> torch.device:
    """The benchmark's device; exits naming it when it asks for CUDA on a machine without a GPU."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: no CUDA GPU here; use --device cpu with small settings")
    return device


def random_model(args: argparse.Namespace, device: torch.device, seqlen: int = 2048) -> torch.nn.Module:
    """The random-weight LLaMA of the shape flags (seed 0) built on ``device``."""
    from pruning.model.synthetic import random_llama

    return random_llama(hidden=args.hidden, layers=args.layers, intermediate=args.intermediate, heads=args.heads,
                        vocab=args.vocab, dtype=DTYPES[args.dtype], device=str(device), seed=0,
                        max_positions=max(4096, seqlen))
