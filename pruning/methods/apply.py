"""Apply a pruning kernel to one ``nn.Linear`` in place (the only code here that touches modules)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruning.methods.magnitude import magnitude_mask
from pruning.methods.sparsegpt import sparsegpt_prune, sparsegpt_prune_group
from pruning.methods.wanda import act_norm_from_sq_sum, wanda_mask


@torch.no_grad()
def prune_linear(
    module: nn.Linear,
    method: str,
    sparsity: float,
    *,
    act_sq_sum: Tensor | None = None,
    hessian: Tensor | None = None,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    compute_device: torch.device | str | None = None,
) -> int:
    """Prune ``module.weight`` ``(out, in)`` in place with ``method`` at ``sparsity`` (or N:M).

    ``act_sq_sum`` ``(in,)`` (sum of x_j^2 over calibration tokens) is needed by Wanda, ``hessian``
    ``(in, in)`` by SparseGPT. The kernel runs on ``compute_device`` (default: the weight's device)
    in float32; the result is written back in the weight's dtype and device.
    Returns the number of zero weights after pruning.
    """
    weight = module.weight
    device = torch.device(compute_device) if compute_device is not None else weight.device
    W = weight.data.to(device)  # (out, in)
    if method == "magnitude":
        W_new = W.masked_fill(magnitude_mask(W, sparsity, nm), 0)
    elif method == "wanda":
        if act_sq_sum is None:
            raise ValueError("wanda needs the input activation statistics act_sq_sum (in,); run calibration first")
        W_new = W.masked_fill(wanda_mask(W, act_norm_from_sq_sum(act_sq_sum.to(device)), sparsity, nm), 0)
    elif method == "sparsegpt":
        if hessian is None:
            raise ValueError("sparsegpt needs the Hessian (in, in); calibrate with collect_hessian=True")
        W_new, _ = sparsegpt_prune(W, hessian.to(device), sparsity, nm=nm, blocksize=blocksize, percdamp=percdamp)
    else:
        raise ValueError(f"pruning method {method!r} is unknown; accepted: magnitude, wanda, sparsegpt")
    weight.data.copy_(W_new.to(weight.dtype))
    return int((weight.data == 0).sum())


@torch.no_grad()
def prune_linear_group_sparsegpt(
    modules: list[nn.Linear],
    sparsities: list[float],
    hessian: Tensor,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    overwrite_hessian: bool = False,
) -> list[int]:
    """SparseGPT on linear layers that read the same input (shared Hessian ``(in, in)``, e.g.
    q/k/v or gate/up) in one pass (:func:`pruning.methods.sparsegpt.sparsegpt_prune_group`),
    in place, on the weights' device. Returns the number of zero weights per module."""
    weights = [m.weight.data for m in modules]
    results = sparsegpt_prune_group(weights, hessian.to(weights[0].device), sparsities, nm=nm, blocksize=blocksize,
                                    percdamp=percdamp, overwrite_hessian=overwrite_hessian)
    zeros = []
    for module, (W_new, _mask) in zip(modules, results):
        module.weight.data.copy_(W_new.to(module.weight.dtype))
        zeros.append(int((module.weight.data == 0).sum()))
    return zeros
