"""SparseGPT (Frantar & Alistarh 2023, "SparseGPT: Massive Language Models Can Be Accurately
Pruned in One-Shot", arXiv:2301.00774), following IST-DASLab/sparsegpt ``SparseGPT.fasterprune``.

Layer-wise problem: min ||W X - W_hat X||^2 with X: ``(in, tokens)`` the layer inputs and
H = 2/N X X^T ``(in, in)`` its Hessian. Algorithm:

1. dead inputs (H_jj = 0) get H_jj = 1 and their weights are zeroed;
2. damping: H += percdamp * mean(diag H) * I (1% by default);
3. U = upper Cholesky factor of H^-1 (``cholesky(cholesky_inverse(cholesky(H)), upper=True)``);
4. columns are processed in blocks of ``blocksize`` (128): the mask of a block is chosen once
   when the block is reached, from w^2 / [U]_jj^2 over the whole (out, blocksize) block (adaptive
   mask selection); N:M masks are chosen every M columns instead;
5. column by column inside the block, the pruned weights are removed and the error
   (w - q) / U_jj is spread over the remaining columns of the block with row i of U (the exact OBS
   update of the Cholesky formulation); the accumulated errors update all later columns at once
   after the block (lazy batch updates).
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from pruning.methods.select import prune_count

log = logging.getLogger(__name__)


def inverse_hessian_cholesky(H: Tensor, percdamp: float = 0.01) -> tuple[Tensor, Tensor]:
    """Damped H -> (upper Cholesky factor U of H^-1 ``(in, in)``, dead-input mask ``(in,)``).

    Does not modify ``H``. Raises RuntimeError when the damped Hessian is not positive definite.
    """
    H = H.detach().float().clone()  # (in, in)
    dead = torch.diag(H) == 0  # (in,)
    H[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    H[idx, idx] += damp
    try:
        L = torch.linalg.cholesky(H)
        Hinv = torch.cholesky_inverse(L)
        U = torch.linalg.cholesky(Hinv, upper=True)
    except RuntimeError as exc:  # torch raises torch.linalg.LinAlgError (a RuntimeError)
        raise RuntimeError(
            f"SparseGPT: the damped Hessian ({H.shape[0]}x{H.shape[0]}, percdamp {percdamp}) is not positive "
            f"definite ({exc}); increase percdamp or the calibration data"
        ) from exc
    return U, dead


@torch.no_grad()
def sparsegpt_prune(
    W: Tensor,
    H: Tensor,
    sparsity: float,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[Tensor, Tensor]:
    """Prune and update one weight matrix with SparseGPT.

    W: ``(out, in)`` weights (any dtype; computed in float32); H: ``(in, in)`` Hessian 2/N X^T X
    (not modified). ``sparsity`` is reached per column block of ``blocksize`` (exact count
    ``round(sparsity * out * block_width)``); with ``nm=(N, M)`` the N of every M consecutive
    inputs with the lowest w^2/[U]_jj^2 are pruned (``blocksize % M == 0`` keeps groups aligned).

    Returns ``(W_hat, mask)``: the updated float32 weights ``(out, in)`` with zeros at the pruned
    entries, and the bool mask ``(out, in)`` (True = pruned).
    """
    rows, cols = W.shape
    if H.shape != (cols, cols):
        raise ValueError(f"SparseGPT: Hessian shape {tuple(H.shape)} does not match W {tuple(W.shape)}; need ({cols}, {cols})")
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"SparseGPT: blocksize {blocksize} must be a multiple of M={nm[1]} for N:M {nm[0]}:{nm[1]}")
    W = W.detach().float().clone()  # (out, in)
    U, dead = inverse_hessian_cholesky(H.to(W.device), percdamp)  # (in, in), (in,)
    W[:, dead] = 0.0
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=W.device)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        width = i2 - i1
        W1 = W[:, i1:i2].clone()  # (out, width)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]  # (width, width)
        d1 = torch.diag(U1)  # (width,)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:
            k = prune_count(W1.numel(), sparsity)
            if k:
                saliency = (W1**2 / d1.reshape(1, -1) ** 2).reshape(-1)  # OBS error of each weight
                mask1.view(-1)[torch.sort(saliency, stable=True).indices[:k]] = True
        err_scale = mask1.float() / d1.reshape(1, -1)  # (out, width): 1/U_jj where pruned, else 0
        for i in range(width):
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                saliency = W1[:, i : i + m] ** 2 / d1[i : i + m].reshape(1, -1) ** 2  # (out, M)
                mask1.scatter_(1, i + torch.topk(saliency, n, dim=1, largest=False).indices, True)
                err_scale[:, i : i + m] = mask1[:, i : i + m].float() / d1[i : i + m].reshape(1, -1)
            err = W1[:, i] * err_scale[:, i]  # (out,) = (w - q) / U_ii with q = w * (1 - mask)
            W1[:, i:].addr_(err, U1[i, i:], alpha=-1.0)  # exact OBS update; column i becomes q
            Err1[:, i] = err
        W[:, i1:i2] = W1.masked_fill_(mask1, 0.0)
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]  # lazy batch update of the later columns
    W[mask] = 0.0
    return W, mask
