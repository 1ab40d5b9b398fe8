"""Calibration statistics of the linear layers of one decoder block: forward hooks that accumulate
``act_sq_sum`` (sum over tokens of x_j^2, Wanda's ||X_j||_2 squared) and ``X^T X`` (SparseGPT's
Hessian H = 2/N X^T X) once per input group (layers that read the same input share one set)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruning.model.families import FamilySpec, MatrixRef, block_matrices

log = logging.getLogger(__name__)


@dataclass
class LinearStats:
    """Calibration statistics of one ``nn.Linear`` of the current block (inputs X: ``(N, in)``)."""

    name: str
    block: int
    matrix_type: str
    act_sq_sum: Tensor  # (in,) float32, sum_t x_tj^2; Wanda norm = sqrt(act_sq_sum)
    hessian: Tensor | None  # (in, in) float32, H = 2/N X^T X (SparseGPT scaling), N = n_tokens
    n_tokens: int

    @property
    def act_norm(self) -> Tensor:
        """||X_j||_2 ``(in,)`` (Wanda)."""
        return torch.sqrt(self.act_sq_sum)


class StopBlockForward(Exception):
    """Raised by the statistics hook of the family's ``stats_exit`` matrix once its input is recorded:
    the rest of the block's forward would compute nothing the statistics need."""


class StatsCollector:
    """Forward pre-hooks accumulating act_sq_sum and X^T X for the input groups of one block.

    ``stop_at``: a matrix type; once the input of its group is accumulated the hook raises
    :class:`StopBlockForward`, so that matrix and everything after it in the block never run
    (the caller catches it; :func:`pruning.calibration.sequential.run_block`)."""

    def __init__(self, matrices: list[MatrixRef], groups: tuple[tuple[str, ...], ...], collect_hessian: bool,
                 stop_at: str | None = None) -> None:
        by_type = {ref.matrix_type: ref for ref in matrices}
        self.handles: list[Any] = []
        self.acc: list[dict[str, Any]] = []
        covered: set[str] = set()
        for group in groups:
            refs = [by_type[t] for t in group if t in by_type]
            covered.update(r.matrix_type for r in refs)
            if refs:
                self._add(refs, collect_hessian, stop_at)
        for ref in matrices:  # a type missing from input_groups reads its own input
            if ref.matrix_type not in covered:
                self._add([ref], collect_hessian, stop_at)

    def _add(self, refs: list[MatrixRef], collect_hessian: bool, stop_at: str | None) -> None:
        cols = refs[0].module.in_features
        dev = refs[0].module.weight.device
        acc = {
            "refs": refs,
            "sq": torch.zeros(cols, dtype=torch.float32, device=dev),
            "xtx": torch.zeros(cols, cols, dtype=torch.float32, device=dev) if collect_hessian else None,
            "n": 0,
        }
        self.acc.append(acc)
        stops = stop_at is not None and any(r.matrix_type == stop_at for r in refs)

        def hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x_raw = inputs[0].detach().reshape(-1, cols)  # (tokens, in), model dtype
            x = x_raw.float()
            acc["sq"] += (x * x).sum(dim=0)
            if acc["xtx"] is not None:
                accumulate_xtx(acc["xtx"], x_raw, x)  # (in, in) += X^T X
            acc["n"] += x.shape[0]
            if stops:
                raise StopBlockForward

        self.handles.append(refs[0].module.register_forward_pre_hook(hook))

    def remove(self) -> None:
        """Detach the hooks."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def stats(self) -> dict[str, LinearStats]:
        """The accumulated statistics keyed by full module name (H scaled to 2/N X^T X); the
        collector is empty afterwards."""
        out: dict[str, LinearStats] = {}
        for acc in self.acc:
            n = acc["n"]
            if n == 0:
                raise RuntimeError(f"calibration: {acc['refs'][0].name} saw no input tokens during the block's forward "
                                   "(a family's stats_exit must name the last matrix a block runs: the statistics "
                                   "pass stops there)")
            hessian = acc["xtx"].mul_(2.0 / n) if acc["xtx"] is not None else None  # H = 2/N X^T X
            for ref in acc["refs"]:
                out[ref.name] = LinearStats(ref.name, ref.block, ref.matrix_type, acc["sq"], hessian, n)
        self.acc.clear()
        return out


_HALF_GEMM_OK: dict[tuple[str, torch.dtype], bool] = {}


def _half_gemm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``addmm(out_dtype=float32)`` on 16-bit inputs runs here and equals the float32 GEMM
    (probed once per device type and dtype on a small exact case)."""
    key = (device.type, dtype)
    if key not in _HALF_GEMM_OK:
        ok = False
        if device.type == "cuda":
            try:
                x = torch.arange(-64, 64, device=device, dtype=torch.float32).reshape(32, 4).to(dtype)
                acc = torch.ones(4, 4, device=device)
                torch.addmm(acc, x.t(), x, out_dtype=torch.float32, out=acc)
                ok = torch.equal(acc, 1.0 + x.float().t() @ x.float())
            except (RuntimeError, TypeError) as exc:
                log.info("float16/bfloat16 GEMM with float32 output unavailable (%s); X^T X in float32", exc)
        _HALF_GEMM_OK[key] = ok
    return _HALF_GEMM_OK[key]


def accumulate_xtx(xtx: Tensor, x_raw: Tensor, x_float: Tensor) -> None:
    """``xtx += X^T X`` in float32 (SparseGPT's Hessian, Frantar & Alistarh 2023). xtx: ``(in, in)``
    float32; X: ``(tokens, in)`` in the model dtype (``x_raw``) and in float32 (``x_float``).

    On CUDA with float16/bfloat16 activations the GEMM reads the 16-bit values directly on the
    tensor cores with float32 accumulation and output: each product of two 16-bit numbers is exact
    in float32, so this equals the float32 GEMM up to the order of the additions, at several times
    the speed. Elsewhere: ``addmm_`` on the float32 copy."""
    if x_raw.dtype in (torch.float16, torch.bfloat16) and _half_gemm_works(x_raw.device, x_raw.dtype):
        torch.addmm(xtx, x_raw.t(), x_raw, out_dtype=torch.float32, out=xtx)
    else:
        xtx.addmm_(x_float.t(), x_float)


def input_group_widths(block: nn.Module, family: FamilySpec) -> list[int]:
    """Input width of each input group of one block (LLaMA: hidden for q/k/v, o and gate/up; the MLP
    width for down) — the sizes of the block's statistics."""
    by_type = {ref.matrix_type: ref for ref in block_matrices(block, 0, family)}
    widths, covered = [], set()
    for group in family.input_groups:
        present = [t for t in group if t in by_type]
        if present:
            widths.append(by_type[present[0]].module.in_features)
            covered.update(present)
    widths += [ref.module.in_features for t, ref in by_type.items() if t not in covered]
    return widths
