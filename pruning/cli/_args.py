"""Argument types that bound every number and check every name while the command line is parsed,
so a bad value is a one-line usage error (status 2) before any model is loaded.

The bounds are those of :class:`pruning.config.run_config.RunConfig` (docs/jobs.md "Validation").
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from pruning.config.run_config import DTYPES, MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_SEQLEN
from pruning.methods.registry import method_names

DEVICE_FORM = re.compile(r"cpu|cuda(:\d+)?|mps|auto")


def int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer; accepted: {low}..{high}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range; accepted: {low}..{high}")
        return value

    return parse


def float_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite float in the interval from ``low`` to ``high`` (open ends as given)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; accepted: {interval}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(f"{text!r} is out of range; accepted: a number in {interval}")
        return value

    return parse


def pruning_method_name(text: str) -> str:
    """An argparse type: a registered method that prunes (:mod:`pruning.methods.registry`), looked up
    when the command line is parsed, so a method registered after import counts."""
    accepted = method_names(pruning_only=True)
    if text not in accepted:
        raise argparse.ArgumentTypeError(f"{text!r} is not a registered pruning method; "
                                         f"accepted: {', '.join(accepted)}")
    return text


def dataset_name(text: str) -> str:
    """An argparse type: a corpus name or ``text:PATH`` of an existing file (pruning.run.validation)."""
    from pruning.errors import ConfigError
    from pruning.run.validation import check_dataset

    try:
        check_dataset("dataset", text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("dataset: ")) from None
    return text


def dataset_or_none(text: str) -> str:
    """An argparse type: ``none`` or a :func:`dataset_name`."""
    return text if text == "none" else dataset_name(text)


def device_name(text: str) -> str:
    """An argparse type: ``cpu``, ``cuda``, ``cuda:N``, ``mps`` or ``auto``."""
    if not DEVICE_FORM.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; accepted: cpu, cuda, cuda:N, mps, auto")
    return text


SEQLEN = int_in(1, MAX_SEQLEN)
SEED = int_in(0, MAX_SEED)
BATCH = int_in(1, MAX_BATCH)
COUNT = int_in(1, MAX_COUNT)
SECONDS = float_in(0.0, 86_400.0, low_open=True)
SPARSITY = float_in(0.0, 1.0, high_open=True)
DTYPE_CHOICES = DTYPES

__all__ = ["BATCH", "COUNT", "DTYPE_CHOICES", "SECONDS", "SEED", "SEQLEN", "SPARSITY", "add_model_placement", "dataset_name",
           "dataset_or_none", "device_name", "float_in", "int_in", "pruning_method_name"]


def add_model_placement(parser: argparse.ArgumentParser) -> None:
    """``--device`` (cpu by default) and ``--dtype`` (float32 by default) of a command that loads
    one model to measure it."""
    parser.add_argument("--device", type=device_name, default="cpu")
    parser.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES)
