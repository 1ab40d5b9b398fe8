"""The faster SparseGPT kernel equals the reference column loop (Frantar & Alistarh 2023).

Tolerances: in float64 the two differ only by the order of additions (~1e-15 relative), so masks
must be identical and weights equal to 1e-10. In float32 (the production dtype) one OBS step
carries relative rounding ~1e-7 and errors accumulate over <= 256 columns, so weights agree to
rtol 1e-4 / atol 1e-5 (values are O(1)); masks are compared exactly on these seeds (a mask differs
only when two saliencies tie within rounding, which these inputs do not contain — checked in float64).
"""

from __future__ import annotations

import pytest
import torch

from pruning.methods.sparsegpt import (
    masked_obs_errors,
    sparsegpt_prune,
    sparsegpt_prune_group,
)


def problem(out: int, cols: int, dtype: torch.dtype, seed: int, dead: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(out, cols, generator=gen, dtype=torch.float64)
    X = torch.randn(4 * cols, cols, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 3.0, cols, dtype=torch.float64)
    X[:, :dead] = 0  # dead inputs: H_jj = 0
    H = 2.0 / X.shape[0] * X.t() @ X
    return W.to(dtype), H.to(dtype)


CASES = [  # (out, cols, blocksize, sparsity, nm)
    (24, 96, 32, 0.7, None),
    (40, 100, 32, 0.5, None),  # a last block narrower than blocksize
    (16, 64, 64, 0.3, None),
    (24, 96, 32, 0.5, (2, 4)),
    (16, 64, 16, 0.5, (4, 8)),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("case", CASES)
def test_fast_kernel_equals_reference(case, dtype: torch.dtype) -> None:
    out, cols, blocksize, sparsity, nm = case
    W, H = problem(out, cols, dtype, seed=cols + out, dead=3)
    H_before = H.clone()
    ref_W, ref_mask = sparsegpt_prune(W, H, sparsity, nm=nm, blocksize=blocksize, reference=True)
    new_W, new_mask = sparsegpt_prune(W, H, sparsity, nm=nm, blocksize=blocksize)
    assert torch.equal(H, H_before)  # not modified
    assert torch.equal(new_mask, ref_mask)
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(new_W, ref_W, **tol)
    assert bool((new_W[new_mask] == 0).all())
    # the update is real: surviving weights moved (a mask-only kernel would fail here)
    assert (new_W - W.to(new_W.dtype))[~new_mask].abs().max() > 1e-3


def test_shared_hessian_group_equals_per_matrix() -> None:
    """q/k/v-like matrices of different heights and sparsities, one Hessian: one pass == three."""
    W1, H = problem(32, 96, torch.float64, seed=1)
    W2, _ = problem(16, 96, torch.float64, seed=2)
    W3, _ = problem(8, 96, torch.float64, seed=3)
    sparsities = [0.7, 0.5, 0.3]
    grouped = sparsegpt_prune_group([W1, W2, W3], H, sparsities, blocksize=32)
    for W, s, (gW, gmask) in zip((W1, W2, W3), sparsities, grouped):
        ref_W, ref_mask = sparsegpt_prune(W, H, s, blocksize=32, reference=True)
        assert torch.equal(gmask, ref_mask)
        torch.testing.assert_close(gW, ref_W, rtol=1e-10, atol=1e-10)
        assert abs(gmask.float().mean().item() - s) < 0.02  # each matrix its own count


def test_overwrite_hessian_gives_the_same_result() -> None:
    W, H = problem(16, 64, torch.float32, seed=4)
    kept = sparsegpt_prune_group([W], H.clone(), [0.6], blocksize=32)[0]
    consumed = sparsegpt_prune_group([W], H.clone(), [0.6], blocksize=32, overwrite_hessian=True)[0]
    assert torch.equal(kept[0], consumed[0]) and torch.equal(kept[1], consumed[1])


def test_triangular_solve_equals_column_loop() -> None:
    gen = torch.Generator().manual_seed(5)
    W, H = problem(12, 16, torch.float64, seed=5)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    mask = torch.rand(12, 16, generator=gen) < 0.5
    loop = masked_obs_errors(W, U, mask, "loop")
    solve = masked_obs_errors(W, U, mask, "solve")
    torch.testing.assert_close(solve, loop, rtol=1e-12, atol=1e-12)
    assert bool((loop[~mask] == 0).all()) and loop[mask].abs().min() > 0
