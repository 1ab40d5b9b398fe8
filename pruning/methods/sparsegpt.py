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

Two implementations of step 5, equal up to float rounding (tests/test_sparsegpt_fast.py):

* :func:`sparsegpt_prune` with ``reference=True`` — the column loop of the reference code (three
  small kernels per column: on a GPU the per-column Python and launch overhead dominates);
* :func:`sparsegpt_prune_group` (and :func:`sparsegpt_prune`, one matrix) — the errors of a whole
  mask segment in one batched triangular solve. With the mask of the segment fixed, the loop's
  recursion err_i = s_i (w_i - sum_{j<i} err_j U_ji) (s_i = 1/U_ii where pruned, else 0) is, per
  row, the unit lower-triangular system (I + S L) err = S w with L the strict lower part of U^T;
  one segment is the whole ``blocksize`` block for unstructured masks (chosen once per block) and M
  columns for N:M (each mask chosen from the weights as updated so far, as in the loop). Matrices
  that read the same input (q/k/v, gate/up) share H, so they share U: their rows are stacked and
  processed in one pass, with the inverse computed once and each matrix's mask chosen on its own
  rows (rows never interact in the update).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor

from pruning.methods.registry import KernelOptions, LayerStatistics
from pruning.methods.select import prune_count

log = logging.getLogger(__name__)


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 for 16/32-bit weights (as the reference code), float64 kept (used by tests)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def inverse_hessian_cholesky(
    H: Tensor, percdamp: float = 0.01, *, overwrite: bool = False, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Damped H -> (upper Cholesky factor U of H^-1 ``(in, in)``, dead-input mask ``(in,)``).

    Does not modify ``H`` unless ``overwrite`` (then U is computed in H's memory: no second
    ``(in, in)`` float32 matrix, 3.3 GiB for the 28672 inputs of a 70B down projection). Raises
    RuntimeError saying the damped Hessian is not positive definite only when the factorization says
    so (``torch.linalg.LinAlgError``); any other solver failure (:func:`solver_failure`) is reported as
    the solver's, not the matrix's.
    """
    H = H.detach()
    H = H if overwrite and H.dtype == dtype else H.to(dtype).clone()  # (in, in), the working copy
    n = H.shape[0]
    dead = torch.diag(H) == 0  # (in,)
    H[dead, dead] = 1.0
    damp = percdamp * torch.mean(torch.diag(H))
    idx = torch.arange(n, device=H.device)
    H[idx, idx] += damp
    try:  # in place on the working copy: L, then H^-1, then U overwrite it in turn
        torch.linalg.cholesky(H, out=H)
        torch.cholesky_inverse(H, out=H)
        U = torch.linalg.cholesky(H, upper=True, out=H)
    except RuntimeError as exc:  # torch.linalg.LinAlgError is a RuntimeError; so are CUDA's own failures
        raise solver_failure(exc, n, percdamp, H.device) from exc
    return U, dead


def solver_failure(exc: RuntimeError, n: int, percdamp: float, device: torch.device) -> RuntimeError:
    """The error to raise when factoring the damped ``(n, n)`` Hessian raised ``exc``.

    Only ``torch.linalg.LinAlgError`` (the factorization's info code: a leading minor not positive)
    means the matrix is not positive definite. Anything else comes from the solver itself: on a GPU
    ``CUSOLVER_STATUS_INTERNAL_ERROR`` at ``cusolverDnCreate``, a cuBLAS handle that cannot be created,
    or ``torch.OutOfMemoryError`` all mean the device had no memory left for the solver's workspace
    (seen with 8 workers sharing one H100), and more damping would not help."""
    if isinstance(exc, torch.linalg.LinAlgError):
        return RuntimeError(
            f"SparseGPT: the damped Hessian ({n}x{n}, percdamp {percdamp}) is not positive "
            f"definite ({exc}); increase percdamp or the calibration data"
        )
    solver = "GPU" if device.type == "cuda" else device.type.upper()
    return RuntimeError(
        f"SparseGPT: the {solver} solver failed while factoring the damped Hessian ({n}x{n}, percdamp "
        f"{percdamp}) on {device}, likely out of memory (not a property of the matrix): "
        f"{type(exc).__name__}: {exc}; free memory on the device (fewer workers per GPU) and retry the job"
    )


def _check_nm_blocksize(nm: tuple[int, int] | None, blocksize: int) -> None:
    """N:M masks are chosen every M columns inside a column block: the block must hold whole groups."""
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"SparseGPT: blocksize {blocksize} must be a multiple of M={nm[1]} for N:M {nm[0]}:{nm[1]}")


@torch.no_grad()
def _reference_column_loop(W: Tensor, H: Tensor, sparsity: float, nm: tuple[int, int] | None, blocksize: int,
                           percdamp: float) -> tuple[Tensor, Tensor]:
    """:func:`sparsegpt_prune` with ``reference=True``: the column loop of the reference code, one
    matrix (its Hessian's shape checked by the caller)."""
    rows, cols = W.shape
    _check_nm_blocksize(nm, blocksize)
    W = W.detach().to(_compute_dtype(W.dtype)).clone()  # (out, in)
    U, dead = inverse_hessian_cholesky(H.to(W.device), percdamp, dtype=W.dtype)  # (in, in), (in,)
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


#: Bytes of the batched triangular systems ``(rows, w, w)`` built at once (rows are chunked).
SOLVE_CHUNK_BYTES = 256 * 2**20


def masked_obs_errors(W_seg: Tensor, U_seg: Tensor, mask_seg: Tensor, method: str = "solve") -> Tensor:
    """OBS errors of one mask segment: what the reference column loop accumulates in ``Err1``.

    W_seg: ``(rows, w)`` weights as updated up to the segment; U_seg: ``(w, w)`` upper Cholesky
    factor of H^-1 on the segment; mask_seg: bool ``(rows, w)`` (True = pruned). Returns E
    ``(rows, w)`` with E_i = s_i (w_i - sum_{j<i} E_j U_ji), s_i = 1/U_ii on pruned entries, else 0
    (Frantar & Alistarh 2023, Algorithm 1, inner loop). ``method="solve"``: per row the unit
    lower-triangular system (I + S L) E = S w, L = strict lower part of U_seg^T, in batched
    triangular solves; ``"loop"``: the reference column loop.
    """
    rows, width = W_seg.shape
    scale = mask_seg.to(W_seg.dtype) / torch.diag(U_seg).reshape(1, -1)  # (rows, w): s
    if method == "loop":
        W1 = W_seg.clone()
        E = torch.zeros_like(W1)
        for i in range(width):
            err = W1[:, i] * scale[:, i]
            W1[:, i:].addr_(err, U_seg[i, i:], alpha=-1.0)
            E[:, i] = err
        return E
    if method != "solve":
        raise ValueError(f"masked_obs_errors: method {method!r} is unknown; accepted: solve, loop")
    lower = torch.tril(U_seg.t(), diagonal=-1)  # (w, w): L_ij = U_ji for j < i
    rhs = scale * W_seg  # (rows, w)
    E = torch.empty_like(W_seg)
    chunk = max(1, SOLVE_CHUNK_BYTES // (width * width * W_seg.element_size()))
    eye = torch.eye(width, dtype=W_seg.dtype, device=W_seg.device)
    for r0 in range(0, rows, chunk):
        r1 = min(r0 + chunk, rows)
        A = torch.addcmul(eye, scale[r0:r1, :, None], lower)  # (chunk, w, w) = I + S L
        E[r0:r1] = torch.linalg.solve_triangular(A, rhs[r0:r1, :, None], upper=False, unitriangular=True)[..., 0]
    return E


@torch.no_grad()
def sparsegpt_prune_group(
    weights: Sequence[Tensor],
    H: Tensor,
    sparsities: Sequence[float],
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    overwrite_hessian: bool = False,
    inblock: str = "solve",
) -> list[tuple[Tensor, Tensor]]:
    """Prune several matrices that read the same inputs (one Hessian) with SparseGPT in one pass.

    weights: ``(out_k, in)`` each (any dtype; float32 compute, float64 kept); H: ``(in, in)`` =
    2/N X^T X of their shared input (modified only with ``overwrite_hessian``); sparsities: one per
    matrix, reached per column block of ``blocksize`` with the exact count
    ``round(s * out_k * width)`` of :func:`sparsegpt_prune`; ``nm=(N, M)`` instead prunes N
    of every M consecutive inputs per row. ``inblock``: ``"solve"`` (batched triangular solves) or
    ``"loop"`` (the reference column loop) for the errors inside a block.

    Returns ``[(W_hat, mask), ...]`` per matrix: float32 weights ``(out_k, in)`` with zeros at the
    pruned entries and the bool mask (True = pruned). Equal to ``sparsegpt_prune(..., reference=True)``
    on each matrix up to float rounding (Frantar & Alistarh 2023, Algorithm 1 with lazy batch
    updates; the inverse Hessian is computed once for the group).
    """
    if not weights or len(weights) != len(sparsities):
        raise ValueError(f"SparseGPT: need one sparsity per matrix, got {len(weights)} matrices and {len(sparsities)} sparsities")
    cols = weights[0].shape[1]
    for W in weights:
        if W.ndim != 2 or W.shape[1] != cols:
            raise ValueError(f"SparseGPT: matrices of a group must share the input width {cols}, got {tuple(W.shape)}")
    if H.shape != (cols, cols):
        raise ValueError(f"SparseGPT: Hessian shape {tuple(H.shape)} does not match W (*, {cols}); need ({cols}, {cols})")
    _check_nm_blocksize(nm, blocksize)
    for s in sparsities:
        prune_count(1, s)  # validates the range
    dtype = _compute_dtype(weights[0].dtype)
    device = weights[0].device
    W = torch.cat([w.detach().to(device=device, dtype=dtype) for w in weights], dim=0)  # (rows, in)
    bounds = [0]
    for w in weights:
        bounds.append(bounds[-1] + w.shape[0])
    U, dead = inverse_hessian_cholesky(H.to(device), percdamp, overwrite=overwrite_hessian, dtype=dtype)
    W[:, dead] = 0.0
    rows = W.shape[0]
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)

    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        width = i2 - i1
        W1 = W[:, i1:i2]  # (rows, width), view: updated at the end of the block
        U1 = U[i1:i2, i1:i2]  # (width, width)
        d1 = torch.diag(U1)  # (width,)
        mask1 = torch.zeros(rows, width, dtype=torch.bool, device=device)
        if nm is None:
            for (r0, r1), s in zip(zip(bounds[:-1], bounds[1:]), sparsities):
                k = prune_count((r1 - r0) * width, s)
                if k:  # the reference's adaptive mask: lowest w^2 / [U]_jj^2 over the (out, width) block
                    saliency = (W1[r0:r1] ** 2 / d1.reshape(1, -1) ** 2).reshape(-1)
                    mask1[r0:r1].view(-1)[torch.sort(saliency, stable=True).indices[:k]] = True
            Err1 = masked_obs_errors(W1, U1, mask1, inblock)  # (rows, width)
        else:
            n, m = nm
            Err1 = torch.zeros(rows, width, dtype=dtype, device=device)
            for j in range(0, width, m):
                current = W1[:, j : j + m]
                if j:  # the weights of this group as updated by the errors of the block so far
                    current = current - Err1[:, :j] @ U1[:j, j : j + m]
                saliency = current**2 / d1[j : j + m].reshape(1, -1) ** 2  # (rows, M)
                mask1[:, j : j + m].scatter_(1, torch.topk(saliency, n, dim=1, largest=False).indices, True)
                Err1[:, j : j + m] = masked_obs_errors(current, U1[j : j + m, j : j + m], mask1[:, j : j + m], inblock)
        W[:, i1:].addmm_(Err1, U[i1:i2, i1:], alpha=-1.0)  # in-block OBS updates + lazy update of later columns, no temporary
        W[:, i1:i2].masked_fill_(mask1, 0.0)
        mask[:, i1:i2] = mask1
    W[mask] = 0.0
    return [(W[r0:r1], mask[r0:r1]) for r0, r1 in zip(bounds[:-1], bounds[1:])]


def sparsegpt_prune(
    W: Tensor,
    H: Tensor,
    sparsity: float,
    *,
    nm: tuple[int, int] | None = None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    reference: bool = False,
) -> tuple[Tensor, Tensor]:
    """Prune and update one weight matrix with SparseGPT (Frantar & Alistarh 2023).

    W: ``(out, in)`` weights (any dtype; computed in float32, float64 kept); H: ``(in, in)`` Hessian
    2/N X^T X (not modified). ``sparsity`` is reached per column block of ``blocksize`` (exact count
    ``round(sparsity * out * block_width)``); with ``nm=(N, M)`` the N of every M consecutive
    inputs with the lowest w^2/[U]_jj^2 are pruned (``blocksize % M == 0`` keeps groups aligned).
    Computed by :func:`sparsegpt_prune_group`; ``reference=True`` runs the column loop of the
    reference code instead, kept as the reference for the group kernel (same results up to float
    rounding, tests/test_sparsegpt_fast.py; much slower on a GPU).

    Returns ``(W_hat, mask)``: the updated float32 weights ``(out, in)`` with zeros at the pruned
    entries, and the bool mask ``(out, in)`` (True = pruned).
    """
    if H.shape != (W.shape[1], W.shape[1]):
        raise ValueError(f"SparseGPT: Hessian shape {tuple(H.shape)} does not match W {tuple(W.shape)}; need ({W.shape[1]}, {W.shape[1]})")
    if reference:
        return _reference_column_loop(W, H, sparsity, nm, blocksize, percdamp)
    return sparsegpt_prune_group([W], H, [sparsity], nm=nm, blocksize=blocksize, percdamp=percdamp)[0]


# ---- the registry's entry points (pruning.methods.registry) ---------------------------------------------------
def sparsegpt_kernel(W: Tensor, stats: LayerStatistics, sparsity: float, nm: tuple[int, int] | None,
                     options: KernelOptions) -> Tensor:
    """One matrix: the updated weights ``(out, in)`` of :func:`sparsegpt_prune` from ``stats.hessian``."""
    return sparsegpt_prune(W, stats.hessian, sparsity, nm=nm, blocksize=options.blocksize, percdamp=options.percdamp)[0]


def sparsegpt_group_kernel(weights: list[Tensor], hessian: Tensor, sparsities: list[float], nm: tuple[int, int] | None,
                           options: KernelOptions, overwrite_hessian: bool) -> list[Tensor]:
    """Matrices sharing one Hessian (q/k/v, gate/up): the updated weights of :func:`sparsegpt_prune_group`
    (one inverse Hessian for the group)."""
    results = sparsegpt_prune_group(weights, hessian, sparsities, nm=nm, blocksize=options.blocksize,
                                    percdamp=options.percdamp, overwrite_hessian=overwrite_hessian)
    return [W_hat for W_hat, _mask in results]


def check_sparsegpt_options(nm: tuple[int, int] | None, options: KernelOptions) -> None:
    """N:M masks are chosen every M columns inside a column block, so the block must hold whole groups."""
    if nm is not None and options.blocksize % nm[1]:
        raise ValueError(f"pruning.blocksize: {options.blocksize} is invalid with N:M {nm[0]}:{nm[1]}; "
                         f"accepted: a multiple of M={nm[1]}")
