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
