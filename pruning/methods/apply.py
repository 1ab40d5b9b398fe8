"""Apply a registered pruning kernel (:mod:`pruning.methods.registry`) to ``nn.Linear`` modules in
place: the only code here that touches modules."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pruning.methods.registry import KernelOptions, LayerStatistics, MethodSpec, get_method


def _require_statistics(spec: MethodSpec, act_sq_sum: Tensor | None, hessian: Tensor | None) -> None:
    if spec.statistics != "none" and act_sq_sum is None:
        raise ValueError(f"{spec.name} needs the input activation statistics act_sq_sum (in,); run calibration first")
    if spec.statistics == "hessian" and hessian is None:
        raise ValueError(f"{spec.name} needs the Hessian (in, in); calibrate with collect_hessian=True")


def _new_weight(spec: MethodSpec, W: Tensor, result: Tensor) -> Tensor:
    """A kernel's result -> the new weight: a bool mask (True = prune) zeroes W, anything else is W."""
    if result.shape != W.shape:
        raise ValueError(f"kernel of {spec.name} returned shape {tuple(result.shape)}; accepted: the weight's "
                         f"shape {tuple(W.shape)} (a bool mask or the new weight)")
    return W.masked_fill(result, 0) if result.dtype == torch.bool else result


def _kernel_weight(spec: MethodSpec, W: Tensor, act_sq_sum: Tensor | None, hessian: Tensor | None, sparsity: float,
                   nm: tuple[int, int] | None, blocksize: int, percdamp: float) -> Tensor:
    """The new weight of ``W`` ``(out, in)`` from ``spec``'s kernel, given the statistics it reads (on
    ``W``'s device); the shared core of :func:`prune_linear` and :func:`pruned_weight`."""
    stats = LayerStatistics(act_sq_sum=act_sq_sum if spec.statistics != "none" else None,
                            hessian=hessian if spec.statistics == "hessian" else None)
    return _new_weight(spec, W, spec.resolved_kernel()(W, stats, sparsity, nm, KernelOptions(blocksize, percdamp)))


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
    """Prune ``module.weight`` ``(out, in)`` in place with the registered ``method`` at ``sparsity``
    (or N:M).

    ``act_sq_sum`` ``(in,)`` (sum of x_j^2 over calibration tokens) is needed by methods with
    statistics ``"activations"`` (Wanda, Sun et al. 2023), also ``hessian`` ``(in, in)`` by those with
    ``"hessian"`` (SparseGPT, Frantar & Alistarh 2023). The kernel runs on ``compute_device``
    (default: the weight's device) in float32; the result is written back in the weight's dtype and
    device. Returns the number of zero weights after pruning.
    """
    spec = get_method(method)
    _require_statistics(spec, act_sq_sum, hessian)
    weight = module.weight
    device = torch.device(compute_device) if compute_device is not None else weight.device
    W = weight.data.to(device)  # (out, in)
    W_new = _kernel_weight(spec, W, act_sq_sum.to(device) if spec.statistics != "none" else None,
                           hessian.to(device) if spec.statistics == "hessian" else None,
                           sparsity, nm, blocksize, percdamp)
    weight.data.copy_(W_new.to(weight.dtype))
    return int((weight.data == 0).sum())


@torch.no_grad()
def prune_linear_group(
    modules: list[nn.Linear],
    method: str,
    sparsities: list[float],
    hessian: Tensor,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    overwrite_hessian: bool = False,
) -> list[int]:
    """Prune linear layers that read the same input (shared Hessian ``(in, in)``, e.g. q/k/v or
    gate/up) in one pass with ``method``'s group kernel (SparseGPT: one inverse Hessian for the
    group, :func:`pruning.methods.sparsegpt.sparsegpt_prune_group`), in place, on the weights'
    device. Returns the number of zero weights per module."""
    spec = get_method(method)
    group_kernel = spec.resolved_group_kernel()
    if group_kernel is None:
        raise ValueError(f"{method} has no group kernel; prune its matrices one by one (prune_linear)")
    weights = [m.weight.data for m in modules]
    options = KernelOptions(blocksize, percdamp)
    new_weights = group_kernel(weights, hessian.to(weights[0].device), sparsities, nm, options, overwrite_hessian)
    zeros = []
    for module, W_new in zip(modules, new_weights):
        module.weight.data.copy_(_new_weight(spec, module.weight.data, W_new).to(module.weight.dtype))
        zeros.append(int((module.weight.data == 0).sum()))
    return zeros


@torch.no_grad()
def pruned_weight(
    weight: Tensor,
    method: str,
    sparsity: float,
    *,
    act_sq_sum: Tensor | None = None,
    hessian: Tensor | None = None,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> Tensor:
    """``weight`` ``(out, in)`` pruned with ``method`` at ``sparsity``, as a new tensor (``weight`` and the
    statistics are left as they are: a level database prunes one matrix at many sparsities,
    :mod:`pruning.run.evopress`). The kernel runs in float32 on the weight's device; the result has the
    weight's dtype."""
    spec = get_method(method)
    _require_statistics(spec, act_sq_sum, hessian)
    W = weight.detach().to(torch.float32).clone()
    return _kernel_weight(spec, W,
                          act_sq_sum.to(W.device, torch.float32).clone() if spec.statistics != "none" else None,
                          hessian.to(W.device, torch.float32).clone() if spec.statistics == "hessian" else None,
                          sparsity, nm, blocksize, percdamp).to(weight.dtype)
