"""Apply a pruning kernel to one ``nn.Linear`` in place (the only code here that touches modules)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruning.methods.magnitude import magnitude_mask
from pruning.methods.sparsegpt import sparsegpt_prune
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
