"""Pruning kernels on hand-computed and synthetic cases chosen so that plausible wrong variants fail."""

from __future__ import annotations

import pytest
import torch

from pruning.methods import (
    magnitude_mask,
    nm_mask,
    outlier_ratio,
    parse_nm,
    prune_count,
    smallest_mask,
    sparsegpt_prune,
    wanda_mask,
    wanda_scores,
)
import pruning.methods.sparsegpt as sparsegpt_mod
from pruning.methods.sparsegpt import inverse_hessian_cholesky
from pruning.methods.wanda import act_norm_from_sq_sum


def test_wanda_uses_norm_not_squared_norm() -> None:
    # W = [1, 3], ||x|| = [2, 1]: |W|*||x|| = [2, 3] prunes column 0; |W|*||x||^2 = [4, 3] would prune column 1.
    W = torch.tensor([[1.0, 3.0]])
    act_sq_sum = torch.tensor([4.0, 1.0])  # sum x^2 -> ||x|| = [2, 1]
    norm = act_norm_from_sq_sum(act_sq_sum)
    assert torch.equal(norm, torch.tensor([2.0, 1.0]))
    assert torch.equal(wanda_scores(W, norm), torch.tensor([[2.0, 3.0]]))
    assert wanda_mask(W, norm, 0.5).tolist() == [[True, False]]
    wrong_variant = W.abs() * norm**2  # [4, 3]: would prune column 1
    assert wrong_variant.argmin().item() == 1
    # activations matter: on W2 magnitude and Wanda prune different weights
    W2 = torch.tensor([[1.0, 1.5]])
    assert magnitude_mask(W2, 0.5).tolist() == [[True, False]]
    assert wanda_mask(W2, torch.tensor([2.0, 1.0]), 0.5).tolist() == [[False, True]]  # 2.0 > 1.5


def test_wanda_comparison_group_is_the_output_row() -> None:
    gen = torch.Generator().manual_seed(1)
    W = torch.randn(16, 40, generator=gen)
    W[:4] *= 100.0  # rows of very different scale: a whole-matrix group would spare them
    norm = torch.rand(40, generator=gen) + 0.1
    mask = wanda_mask(W, norm, 0.3)
    assert mask.sum(dim=1).tolist() == [12] * 16  # round(0.3 * 40) in every row
    # inside each row the pruned entries are exactly the lowest scores
    scores = wanda_scores(W, norm)
    for row in range(16):
        assert scores[row][mask[row]].max() < scores[row][~mask[row]].min()


def test_magnitude_group_is_the_whole_matrix() -> None:
    gen = torch.Generator().manual_seed(2)
    W = torch.randn(8, 10, generator=gen)
    W[0] *= 1000.0
    mask = magnitude_mask(W, 0.5)
    assert int(mask.sum()) == 40
    assert int(mask[0].sum()) == 0  # the big row survives whole: not a per-row group
    assert W.abs()[mask].max() < W.abs()[~mask].min()


@pytest.mark.parametrize("numel,sparsity", [(7, 0.5), (10, 0.57), (1000, 0.7), (33, 0.0), (5, 0.99)])
def test_exact_counts_within_one_element(numel: int, sparsity: float) -> None:
    scores = torch.zeros(numel)  # all ties: a threshold (<=) rule would prune everything
    mask = smallest_mask(scores, sparsity)
    assert abs(int(mask.sum()) - sparsity * numel) <= 0.5 + 1e-9
    assert prune_count(numel, sparsity) == int(mask.sum())


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8)])
def test_nm_pattern_exact_for_every_method(n: int, m: int) -> None:
    gen = torch.Generator().manual_seed(3)
    W = torch.randn(12, 32, generator=gen)
    X = torch.randn(256, 32, generator=gen)
    H = 2.0 / X.shape[0] * X.t() @ X
    norm = X.norm(dim=0)
    masks = {
        "magnitude": magnitude_mask(W, n / m, (n, m)),
        "wanda": wanda_mask(W, norm, n / m, (n, m)),
        "sparsegpt": sparsegpt_prune(W, H, n / m, nm=(n, m), blocksize=16)[1],
    }
    for name, mask in masks.items():
        groups = mask.reshape(12, 32 // m, m).sum(dim=-1)
        assert torch.all(groups == n), name
    # the N:M selection is the N smallest within each group
    scores = wanda_scores(W, norm).reshape(12, -1, m)
    wm = masks["wanda"].reshape(12, -1, m)
    assert torch.all(torch.where(wm, scores, -torch.inf).amax(-1) <= torch.where(~wm, scores, torch.inf).amin(-1))
    W_hat = sparsegpt_prune(W, H, n / m, nm=(n, m), blocksize=16)[0]
    assert torch.all((W_hat == 0).reshape(12, -1, m).sum(-1) >= n)


def test_parse_nm_rejects_bad_forms() -> None:
    assert parse_nm("2:4") == (2, 4) and parse_nm((4, 8)) == (4, 8) and parse_nm(None) is None
    for bad in ("4:4", "5:4", "0:4", "2-4", (3, 2)):
        with pytest.raises(ValueError):
            parse_nm(bad)
    with pytest.raises(ValueError, match="divisible"):
        nm_mask(torch.rand(2, 6), 2, 4)


def _correlated_outlier_inputs(tokens: int, dim: int, seed: int) -> torch.Tensor:
    """X ``(tokens, dim)``: low-rank correlated features plus a few large-magnitude outlier channels
    (the LLM activation pattern that motivates Wanda, Dettmers et al. 2022)."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, 8, generator=gen)
    X = latent @ torch.randn(8, dim, generator=gen) + 0.3 * torch.randn(tokens, dim, generator=gen)
    scale = torch.ones(dim)
    scale[torch.randperm(dim, generator=gen)[:4]] = 20.0
    return X * scale


def test_reconstruction_error_sparsegpt_lt_wanda_lt_magnitude() -> None:
    dim, out, sparsity = 64, 48, 0.5
    X = _correlated_outlier_inputs(2048, dim, seed=4)  # (tokens, in)
    W = torch.randn(out, dim, generator=torch.Generator().manual_seed(5))
    H = 2.0 / X.shape[0] * X.t() @ X
    ref = X @ W.t()  # (tokens, out)

    def err(W_hat: torch.Tensor) -> float:
        return float((ref - X @ W_hat.t()).norm())

    e_mag = err(W.masked_fill(magnitude_mask(W, sparsity), 0))
    e_wanda = err(W.masked_fill(wanda_mask(W, X.norm(dim=0), sparsity), 0))
    W_sgpt, mask = sparsegpt_prune(W, H, sparsity, blocksize=16)
    e_sgpt = err(W_sgpt)
    assert e_sgpt < e_wanda < e_mag, (e_sgpt, e_wanda, e_mag)
    assert e_sgpt < 0.8 * e_wanda  # the OBS update is worth a lot on correlated inputs
    # per 16-column block exactly half of the entries are pruned, and only those are zero
    assert torch.all(mask.reshape(out, dim // 16, 16).sum(dim=(0, 2)) == out * 8)
    assert torch.equal(W_sgpt == 0, mask)


def test_sparsegpt_without_pruning_keeps_weights_and_does_not_touch_hessian() -> None:
    gen = torch.Generator().manual_seed(6)
    W = torch.randn(4, 8, generator=gen)
    X = torch.randn(64, 8, generator=gen)
    H = 2.0 / 64 * X.t() @ X
    H_before = H.clone()
    W_hat, mask = sparsegpt_prune(W, H, 0.0)
    assert not mask.any() and torch.allclose(W_hat, W, atol=1e-5)
    assert torch.equal(H, H_before)


def test_sparsegpt_one_column_matches_closed_form_obs_update() -> None:
    # Pruning a single weight w_q of one row: OBS gives delta = -w_q / [H^-1]_qq * H^-1[:, q].
    gen = torch.Generator().manual_seed(7)
    X = torch.randn(500, 4, generator=gen)
    H = 2.0 / 500 * X.t() @ X
    W = torch.tensor([[0.05, 2.0, -1.5, 1.0]])  # column 0 has the lowest w^2 / [U]_jj^2 here
    W_hat, mask = sparsegpt_prune(W, H, 0.25, percdamp=1e-6)
    assert mask.tolist() == [[True, False, False, False]]
    Hinv = torch.linalg.inv(H + 1e-6 * torch.diag(H).mean() * torch.eye(4))
    expected = W[0] - W[0, 0] / Hinv[0, 0] * Hinv[:, 0]
    assert torch.allclose(W_hat[0], expected, atol=1e-4)
    U, dead = inverse_hessian_cholesky(H, 0.01)
    assert not dead.any() and torch.allclose(U.t() @ U, torch.linalg.inv(H + 0.01 * torch.diag(H).mean() * torch.eye(4)), atol=1e-4)


def test_sparsegpt_dead_inputs_and_bad_hessian() -> None:
    W = torch.ones(2, 3)
    H = torch.diag(torch.tensor([1.0, 0.0, 2.0]))
    W_hat, _ = sparsegpt_prune(W, H, 0.0)
    assert torch.all(W_hat[:, 1] == 0) and torch.all(W_hat[:, [0, 2]] == 1)
    with pytest.raises(RuntimeError, match="positive"):
        sparsegpt_prune(W, -torch.eye(3), 0.5)
    with pytest.raises(ValueError, match="Hessian shape"):
        sparsegpt_prune(W, torch.eye(4), 0.5)


def test_sparsegpt_names_a_solver_failure_apart_from_a_non_positive_definite_hessian(monkeypatch) -> None:
    """Only the factorization's own verdict (LinAlgError) says "not positive definite"; a solver that
    could not start (cusolverDnCreate on a full GPU, as 8 workers on one H100 saw) or ran out of memory
    says so, with the matrix size and the original error."""
    H = torch.eye(5) * 2.0
    with pytest.raises(RuntimeError, match=r"damped Hessian \(3x3, percdamp 0.01\) is not positive definite"):
        inverse_hessian_cholesky(-torch.eye(3), 0.01)  # a real LinAlgError, not a patched one
    cusolver = ("cusolver error: CUSOLVER_STATUS_INTERNAL_ERROR, when calling `cusolverDnCreate(handle)`. "
                "If you keep seeing this error, you may use `torch.backends.cuda.preferred_linalg_library()`")
    for raised in (RuntimeError(cusolver), torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")):
        def failing_cholesky(*args, _raised=raised, **kwargs):
            raise _raised

        monkeypatch.setattr(torch.linalg, "cholesky", failing_cholesky)
        with pytest.raises(RuntimeError) as caught:
            inverse_hessian_cholesky(H, 0.01)
        message = str(caught.value)
        assert "positive definite" not in message and "increase percdamp" not in message
        assert "solver failed" in message and "likely out of memory" in message and "(5x5, percdamp 0.01)" in message
        assert str(raised) in message and type(raised).__name__ in message
        assert caught.value.__cause__ is raised
    monkeypatch.undo()
    patched_linalg = torch.linalg.LinAlgError("linalg.cholesky: The factorization could not be completed because "
                                              "the input is not positive-definite (the leading minor of order 2 is not positive-definite).")
    monkeypatch.setattr(torch.linalg, "cholesky", lambda *a, **k: (_ for _ in ()).throw(patched_linalg))
    with pytest.raises(RuntimeError, match="not positive definite.*leading minor of order 2"):
        inverse_hessian_cholesky(H, 0.01)
    # on a GPU the message names it
    message = str(sparsegpt_mod.solver_failure(RuntimeError(cusolver), 640, 0.01, torch.device("cuda", 0)))
    assert message.startswith("SparseGPT: the GPU solver failed") and "(640x640, percdamp 0.01) on cuda:0" in message


def test_owl_outlier_ratio_counts_above_m_times_the_union_mean() -> None:
    a = torch.tensor([[1.0, 1.0, 1.0, 13.0]])  # union mean over a and b = 20 / 8 = 2.5
    b = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert outlier_ratio([a, b], M=5.0) == pytest.approx(1 / 8)  # only 13 > 12.5
    # per-matrix means (a wrong variant) would give a different answer: a alone has mean 4 -> threshold 20
    assert outlier_ratio([a], M=5.0) == 0.0
    with pytest.raises(ValueError):
        outlier_ratio([a], M=0)
