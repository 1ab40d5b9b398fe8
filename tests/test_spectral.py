"""Spectral metrics: power-law fits against known answers and reference transcriptions,
norm/entropy metrics against hand-computed values, bad input, Hessians, table views, cache."""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np
import pandas as pd
import pytest
import torch

from pruning.spectral import (
    compute_hessian_spectra,
    compute_weight_spectra,
    esd_plot,
    fit_power_laws,
    pivot_for_allocation,
)
from pruning.spectral.esd import weight_eigenvalues
from pruning.spectral.powerlaw import fit_at_xmin
from pruning.model.synthetic import random_llama


def _pareto_iid(alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n i.i.d. draws of p(x) ~ x^-alpha on x >= 1 (numpy's Lomax + 1), ascending."""
    return np.sort(rng.pareto(alpha - 1.0, n) + 1.0)


def _pareto_stratified(alpha: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """n Pareto draws by inverse CDF of jittered strata u_i = (i + U_i)/n (low variance), ascending."""
    u = (np.arange(n) + rng.random(n)) / n
    return np.sort((1.0 - u) ** (-1.0 / (alpha - 1.0)))


def _alphapruning_peak_reference(eigs: np.ndarray, log_lower_bound: bool = True) -> tuple[float, float]:
    """Line-by-line transcription of AlphaPruning's net_esd_estimator(fix_fingers='xmin_peak')
    loop (Lu et al. 2024), in numpy. Returns (alpha, xmin)."""
    eigs = np.sort(eigs)
    N = len(eigs)
    log_eigs = np.log(eigs)
    hist = np.log10(eigs)
    counts, edges = np.histogram(hist, bins=100, range=(hist.min(), hist.max()))
    xmin2 = 10 ** edges[np.argmax(counts)]
    xmin_min = np.log10(0.95 * xmin2) if log_lower_bound else 0.95 * xmin2
    xmin_max = 1.5 * xmin2
    alphas, Ds = np.zeros(N - 1), np.ones(N - 1)
    for i, xmin in enumerate(eigs[:-1]):
        if xmin < xmin_min:
            continue
        if xmin > xmin_max:
            break
        n = float(N - i)
        alpha = 1 + n / (np.sum(log_eigs[i:]) - n * log_eigs[i])
        alphas[i] = alpha
        if alpha > 1:
            Ds[i] = np.max(np.abs(1 - (eigs[i:] / xmin) ** (-alpha + 1) - np.arange(n) / n))
    k = int(np.argmin(Ds))
    return float(alphas[k]), float(eigs[k])


def _ww_fit(evals: np.ndarray):
    """weightwatcher 0.7.7's default fit, as fit_powerlaw calls it (evals > 1e-5)."""
    from weightwatcher.WW_powerlaw import WWFit

    with contextlib.redirect_stdout(io.StringIO()):
        return WWFit(evals[evals > 1e-5])


def _bulk_and_tail(rng: np.random.Generator) -> np.ndarray:
    """Log-normal bulk around 1 (2000 values) + power-law tail alpha=2.5 from 20 (300 values)."""
    bulk = np.exp(rng.normal(0.0, 0.3, 2000))
    tail = 20.0 * _pareto_stratified(2.5, 300, rng)
    return np.sort(np.concatenate([bulk, tail]))


# --------------------------------------------------------------------------- power-law fits


def test_pareto_iid_recovers_alpha() -> None:
    rng = np.random.default_rng(0)
    alphas = [1.5, 2.0, 2.5]
    x = torch.tensor(np.stack([_pareto_iid(a, 8000, rng) for a in alphas]))
    fits = fit_power_laws(x)
    np.testing.assert_allclose(fits.ww.alpha.numpy(), alphas, atol=0.05)
    np.testing.assert_allclose(fits.peak.alpha.numpy(), alphas, atol=0.05)


def test_pareto_stratified_recovers_alpha_all_rules() -> None:
    rng = np.random.default_rng(0)
    alphas = [2.0, 3.0, 4.0, 5.0, 6.0]
    x = torch.tensor(np.stack([_pareto_stratified(a, 3000, rng) for a in alphas]))
    fits = fit_power_laws(x)
    for rule in (fits.ww, fits.peak, fits.mid):
        np.testing.assert_allclose(rule.alpha.numpy(), alphas, atol=0.05)
    # xmin of a pure Pareto sample from 1 sits at its bottom: most of the sample is the tail
    assert (fits.ww.n_tail.numpy() > 2500).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alpha_matches_weightwatcher_fit(seed: int) -> None:
    """alpha, xmin, D equal weightwatcher's WWFit on MP bulk + spikes, with sub-threshold evals."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(300, 120)) / math.sqrt(300)
    W[:, :4] *= rng.uniform(3, 8, 4)  # a few spikes
    evals = np.linalg.eigvalsh(W.T @ W)
    evals[:7] = rng.uniform(0, 9e-6, 7)  # below weightwatcher's 1e-5 filter: never candidates
    evals = np.sort(evals)
    ref = _ww_fit(evals)
    fits = fit_power_laws(torch.tensor(evals)[None])
    assert fits.ww.alpha.item() == pytest.approx(ref.alpha, rel=1e-9)
    assert fits.ww.xmin.item() == pytest.approx(ref.xmin, rel=1e-12)
    assert fits.ww.D.item() == pytest.approx(ref.D, rel=1e-9)
    assert fits.ww.n_tail.item() == int((evals >= ref.xmin).sum())


def test_small_n_rule_matches_weightwatcher() -> None:
    """Fewer than 20 eigenvalues above 1e-5: weightwatcher's bias-corrected small-N rule."""
    rng = np.random.default_rng(3)
    evals = np.sort(np.concatenate([np.zeros(5), _pareto_iid(2.5, 15, rng)]))
    ref = _ww_fit(evals)
    fits = fit_power_laws(torch.tensor(evals)[None])
    assert fits.ww.alpha.item() == pytest.approx(ref.alpha, rel=1e-9)
    assert fits.ww.xmin.item() == pytest.approx(ref.xmin, rel=1e-12)
    # the plain Hill estimate on that tail differs (so this path is really exercised)
    plain, _, _ = fit_at_xmin(torch.tensor(evals), ref.xmin)
    assert abs(plain - ref.alpha) > 1e-3


def test_alpha_peak_follows_design_rule_where_ww_differs() -> None:
    x = _bulk_and_tail(np.random.default_rng(0))
    fits = fit_power_laws(torch.tensor(x)[None])
    ref_alpha, ref_xmin = _alphapruning_peak_reference(x)
    assert fits.peak.alpha.item() == pytest.approx(ref_alpha, rel=1e-9)
    assert fits.peak.xmin.item() == pytest.approx(ref_xmin, rel=1e-12)
    assert fits.peak.xmin.item() <= 1.5 * fits.esd_peak.item()
    # WW's global KS minimum finds the tail (xmin ~ 20, alpha ~ 2.5); the peak rule cannot
    assert fits.ww.alpha.item() == pytest.approx(2.5, abs=0.1)
    assert fits.ww.xmin.item() > 15
    assert abs(fits.peak.alpha.item() - fits.ww.alpha.item()) > 0.3
    # the reference's lower bound is log10(0.95 * peak), not 0.95 * peak: the "fixed" variant differs
    linear_alpha, _ = _alphapruning_peak_reference(x, log_lower_bound=False)
    assert abs(fits.peak.alpha.item() - linear_alpha) > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_alpha_peak_equals_reference_on_mixtures(seed: int) -> None:
    """Mixtures whose peak sits high (the log lower bound binds) or low; batched with padding."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0.3, 3.0, 40)  # below log10(0.95 * peak) when the peak is ~1000
    cluster = np.exp(rng.normal(math.log(1000.0), 0.2, 400))
    tail = 1500.0 * _pareto_stratified(3.0, 120, rng)
    spectra = [np.sort(np.concatenate([low, cluster, tail])), _bulk_and_tail(rng)[::3]]
    fits = fit_power_laws(torch.stack(_pad(spectra)))
    for row, spectrum in enumerate(spectra):
        ref_alpha, ref_xmin = _alphapruning_peak_reference(spectrum)
        assert fits.peak.alpha[row].item() == pytest.approx(ref_alpha, rel=1e-9)
        assert fits.peak.xmin[row].item() == pytest.approx(ref_xmin, rel=1e-12)
        assert fits.ww.alpha[row].item() == pytest.approx(_ww_fit(spectrum).alpha, rel=1e-9)


def _pad(spectra: list[np.ndarray]) -> list[torch.Tensor]:
    n = max(len(s) for s in spectra)
    return [torch.tensor(np.concatenate([np.zeros(n - len(s)), s])) for s in spectra]


def test_alpha_mid_uses_the_median() -> None:
    rng = np.random.default_rng(1)
    x = _bulk_and_tail(rng)[:2001]  # odd count: the median is an eigenvalue
    fits = fit_power_laws(torch.tensor(x)[None])
    assert fits.mid.xmin.item() == pytest.approx(float(np.median(x)), rel=0, abs=0)
    tail = x[x >= np.median(x)]
    hand_alpha = 1 + len(tail) / np.sum(np.log(tail / np.median(x)))
    assert fits.mid.alpha.item() == pytest.approx(hand_alpha, rel=1e-9)
    assert fits.mid.n_tail.item() == len(tail)
    # a quartile or the mean as xmin gives a different alpha
    for other in (np.quantile(x, 0.25), x.mean()):
        assert abs(fit_at_xmin(torch.tensor(x), float(other))[0] - hand_alpha) > 0.05


def test_batched_padded_fit_equals_single_rows() -> None:
    rng = np.random.default_rng(5)
    a, b = _bulk_and_tail(rng)[::2], _pareto_iid(3.0, 700, rng)
    batched = fit_power_laws(torch.stack(_pad([a, b])), max_elements=5000)  # force many chunks
    for row, x in enumerate((a, b)):
        single = fit_power_laws(torch.tensor(x)[None])
        for rule in ("ww", "peak", "mid"):
            assert getattr(batched, rule).alpha[row].item() == pytest.approx(getattr(single, rule).alpha.item(), rel=1e-12)
            assert getattr(batched, rule).n_tail[row].item() == getattr(single, rule).n_tail.item()


# --------------------------------------------------------------------------- norm metrics


def _matrix_with_eigenvalues(eigenvalues: list[float], rows: int, seed: int = 0) -> torch.Tensor:
    """W (rows, len(eigs)) with W^T W having exactly these eigenvalues."""
    gen = torch.Generator().manual_seed(seed)
    m = len(eigenvalues)
    U, _ = torch.linalg.qr(torch.randn(rows, m, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
    return (U * torch.tensor(eigenvalues, dtype=torch.float64).sqrt()) @ V.T


def _spectra_of(weights: dict[str, torch.Tensor]) -> pd.DataFrame:
    from pruning.spectral.summary import SpectrumJob, summarize_spectra

    jobs = [
        SpectrumJob(0, "q", name, "weight", W.shape[0], W.shape[1], numel=W.numel(), eigenvalues=weight_eigenvalues(W))
        for name, W in weights.items()
    ]
    return summarize_spectra(jobs, "hand", torch.float64).table.set_index("name")


def test_norm_entropy_rank_against_hand_values() -> None:
    eigs = [4.0, 2.0, 1.0, 1.0]
    W = _matrix_with_eigenvalues(eigs, rows=6)
    deficient = _matrix_with_eigenvalues([4.0, 2.0, 1.0, 1.0, 0.0], rows=5, seed=1)
    table = _spectra_of({"full": W, "deficient": deficient})
    row = table.loc["full"]
    # p = (1/2, 1/4, 1/8, 1/8): H = 1.75 ln 2 nats
    assert row.entropy == pytest.approx(1.75 * math.log(2), rel=1e-12)
    assert row.entropy_norm == pytest.approx(1.75 * math.log(2) / math.log(4), rel=1e-12)
    assert row.effective_rank == pytest.approx(2 ** 1.75, rel=1e-12)
    assert row.stable_rank == pytest.approx(2.0, rel=1e-12)
    assert row.log_norm == pytest.approx(math.log10(8.0), rel=1e-12)
    assert row.log_spectral_norm == pytest.approx(math.log10(4.0), rel=1e-12)
    assert row.lambda_max == pytest.approx(4.0, rel=1e-12)
    assert (row.num_rank, row.rank_ratio, row.n_eigs) == (4, 1.0, 4)
    # rank 4 of 5: entropy normalized by ln(rank), not ln(min dim); rank ratio 4/5
    low = table.loc["deficient"]
    assert low.num_rank == 4 and low.rank_ratio == pytest.approx(0.8)
    assert low.entropy == pytest.approx(1.75 * math.log(2), rel=1e-9)
    assert low.entropy_norm == pytest.approx(0.875, rel=1e-9)
    assert "rank-deficient: numerical rank 4 of 5" in low.message


def test_gram_side_does_not_matter() -> None:
    W = torch.randn(40, 90, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(weight_eigenvalues(W).numpy(), weight_eigenvalues(W.T).numpy(), rtol=1e-10, atol=1e-12)
    svd = torch.linalg.svdvals(W.double()).flip(0) ** 2
    np.testing.assert_allclose(weight_eigenvalues(W).numpy(), svd.numpy(), rtol=1e-9)


# --------------------------------------------------------------------------- bad input, model tables


def test_bad_matrices_are_reported_not_raised() -> None:
    # heads=16, kv_heads=1 on hidden 64: k/v are (4, 64) -> 4 eigenvalues, below the fit minimum
    model = random_llama(hidden=64, layers=2, intermediate=128, heads=16, kv_heads=1, vocab=64, seed=0)
    blocks = model.model.layers
    with torch.no_grad():
        blocks[0].self_attn.q_proj.weight.zero_()
        blocks[0].self_attn.o_proj.weight[3, 5] = float("nan")
        blocks[0].mlp.up_proj.weight[0, 0] = float("inf")
        u, v = torch.randn(64, 1), torch.randn(1, 64)
        blocks[1].self_attn.q_proj.weight.copy_(u @ v)  # rank 1
    table = compute_weight_spectra(model, model_name="tiny").table.set_index("name")
    assert len(table) == 14
    q0 = table.loc["model.layers.0.self_attn.q_proj"]
    assert q0.status == "failed" and "all-zero" in q0.message and math.isnan(q0.alpha)
    o0 = table.loc["model.layers.0.self_attn.o_proj"]
    assert o0.status == "failed" and "1 NaN" in o0.message
    up0 = table.loc["model.layers.0.mlp.up_proj"]
    assert up0.status == "failed" and "1 Inf" in up0.message
    k0 = table.loc["model.layers.0.self_attn.k_proj"]
    assert k0.status == "partial" and "only 4 eigenvalues" in k0.message
    assert math.isnan(k0.alpha) and k0.stable_rank > 0  # norms still there
    q1 = table.loc["model.layers.1.self_attn.q_proj"]
    assert "numerical rank 1 of 64" in q1.message and q1.num_rank == 1
    good = table.loc[["model.layers.0.mlp.gate_proj", "model.layers.1.mlp.down_proj", "model.layers.1.self_attn.o_proj"]]
    assert (good.status == "success").all() and good.alpha.notna().all()


def test_weight_table_shape_and_subset(tiny_llama: torch.nn.Module) -> None:
    full = compute_weight_spectra(tiny_llama, model_name="tiny")
    assert list(full.table.columns[:5]) == ["model", "block", "matrix_type", "name", "source"]
    assert len(full.table) == 14 and (full.table.source == "weight").all()
    assert (full.table.status == "success").all()
    n_eigs = full.table.set_index("name")["n_eigs"]
    assert n_eigs["model.layers.0.self_attn.k_proj"] == 32 and n_eigs["model.layers.0.mlp.up_proj"] == 64
    assert len(full.eigenvalues) == int(n_eigs.sum())
    one = compute_weight_spectra(tiny_llama, blocks=[1], model_name="tiny").table
    assert set(one.block) == {1}
    pd.testing.assert_frame_equal(
        one.reset_index(drop=True), full.table[full.table.block == 1].reset_index(drop=True)
    )


# --------------------------------------------------------------------------- Hessians


def _hessian(X: torch.Tensor) -> torch.Tensor:
    return 2.0 * X.T @ X / X.shape[0]


def test_hessian_rows_share_one_eigendecomposition() -> None:
    gen = torch.Generator().manual_seed(0)
    X_attn = torch.randn(400, 48, generator=gen) * torch.linspace(0.1, 3, 48)
    X_mlp = torch.randn(400, 96, generator=gen)
    X_mlp[:, 7] = 0.0  # a dead input feature: rank 95
    H_attn, H_mlp = _hessian(X_attn), _hessian(X_mlp)
    hessians = {
        "model.layers.2.self_attn.q_proj": H_attn,
        "model.layers.2.self_attn.k_proj": H_attn,
        "model.layers.2.self_attn.v_proj": H_attn.clone(),  # equal values, another tensor
        "model.layers.2.mlp.down_proj": H_mlp,
    }
    calls: list[tuple[int, int]] = []
    result = compute_hessian_spectra(hessians, model="hand", progress=lambda d, t: calls.append((d, t)))
    table = result.table.set_index("name")
    assert calls[-1] == (2, 2)  # two unique Hessians
    assert set(table.source) == {"hessian"} and len(table) == 4
    assert table.loc["model.layers.2.self_attn.k_proj", "matrix_type"] == "k"
    assert table.loc["model.layers.2.self_attn.k_proj", "block"] == 2
    attn = table.loc[["model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.k_proj", "model.layers.2.self_attn.v_proj"]]
    assert attn.alpha.nunique() == 1 and attn.stable_rank.nunique() == 1
    ref = np.linalg.eigvalsh(H_attn.double().numpy())
    assert table.loc["model.layers.2.self_attn.q_proj", "lambda_max"] == pytest.approx(ref[-1], rel=1e-10)
    assert table.loc["model.layers.2.self_attn.q_proj", "stable_rank"] == pytest.approx(ref.sum() / ref[-1], rel=1e-10)
    down = table.loc["model.layers.2.mlp.down_proj"]
    assert down.num_rank == 95 and "rank-deficient" in down.message and down.status == "success"


def test_hessian_bad_input() -> None:
    H = _hessian(torch.randn(50, 16))
    bad = H.clone()
    bad[0, 0] = float("nan")
    table = compute_hessian_spectra(
        {"a.0.q_proj": H, "a.0.o_proj": bad, "a.0.down_proj": torch.zeros(16, 16), "a.0.up_proj": _hessian(torch.randn(9, 5))}
    ).table.set_index("name")
    assert table.loc["a.0.q_proj", "status"] == "success"
    assert table.loc["a.0.o_proj", "status"] == "failed" and "NaN" in table.loc["a.0.o_proj", "message"]
    assert table.loc["a.0.down_proj", "status"] == "failed" and "all-zero" in table.loc["a.0.down_proj", "message"]
    assert table.loc["a.0.up_proj", "status"] == "partial"


def test_hessian_spectra_through_calibration(tiny_llama: torch.nn.Module) -> None:
    from pruning.model.families import family_for
    from pruning.model.load import LoadedModel, ModelSource
    from pruning.spectral import hessian_spectra

    loaded = LoadedModel(tiny_llama, None, family_for(tiny_llama), ModelSource("local", "tiny", "tiny"), "f" * 16, 0.0)
    ids = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))
    result = hessian_spectra(loaded, ids)
    table = result.table
    assert len(table) == 14 and (table.source == "hessian").all()
    assert (table.status != "failed").all()
    for _, block in table.groupby("block"):
        qkv = block[block.matrix_type.isin(["q", "k", "v"])]
        assert qkv.lambda_max.nunique() == 1
        assert block[block.matrix_type.isin(["gate", "up"])].lambda_max.nunique() == 1
    # 4 unique Hessians per block: q/k/v, o, gate/up, down
    assert result.eigenvalues.groupby("name").size().sum() == 2 * (3 * 64 + 64 + 2 * 64 + 128)


# --------------------------------------------------------------------------- views and cache


def test_pivot_for_allocation(tiny_llama: torch.nn.Module) -> None:
    weights = compute_weight_spectra(tiny_llama, model_name="tiny").table
    gen = torch.Generator().manual_seed(1)
    hessians = {name: _hessian(torch.randn(200, int(n_cols), generator=gen)) for name, n_cols in zip(weights.name, weights.n_cols)}
    hess = compute_hessian_spectra(hessians, model="tiny").table
    pivot = pivot_for_allocation(pd.concat([weights, hess], ignore_index=True))
    assert len(pivot) == 14
    assert {"alpha", "alpha_peak", "hessian_alpha", "hessian_alpha_peak", "numel", "hessian_status"} <= set(pivot.columns)
    row = pivot.set_index("name").loc["model.layers.1.mlp.down_proj"]
    w = weights.set_index("name").loc["model.layers.1.mlp.down_proj"]
    h = hess.set_index("name").loc["model.layers.1.mlp.down_proj"]
    assert row.alpha == w.alpha and row.hessian_alpha == h.alpha and row.numel == 64 * 128
    only_weights = pivot_for_allocation(weights)
    assert only_weights.hessian_alpha.isna().all() and len(only_weights) == 14


def test_esd_plot_counts_and_fit() -> None:
    x = _bulk_and_tail(np.random.default_rng(0))
    fits = fit_power_laws(torch.tensor(x)[None])
    plot = esd_plot(x, fits.ww.alpha.item(), fits.ww.xmin.item(), bins=60)
    assert plot.counts.sum() == len(x) and len(plot.bin_edges) == 61
    centres = 0.5 * (plot.bin_edges[:-1] + plot.bin_edges[1:])
    assert np.isnan(plot.fit_counts[10 ** plot.bin_edges[1:] <= fits.ww.xmin.item()]).all()
    expected_total = plot.n_tail * (1 - (x.max() / plot.xmin) ** (1 - plot.alpha))
    assert np.nansum(plot.fit_counts) == pytest.approx(expected_total, rel=1e-9)
    frame = plot.to_frame()
    assert len(frame) == 60 and np.allclose(frame.log10_center, centres)


def test_cache_computes_once(tiny_llama: torch.nn.Module, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pruning.run.spectra_cache as cache

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path))
    calls = []
    real = cache.compute_weight_spectra
    monkeypatch.setattr(cache, "compute_weight_spectra", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = cache.cached_weight_spectra(tiny_llama)
    second = cache.cached_weight_spectra(tiny_llama)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first.table, second.table, check_dtype=False)
    assert len(second.eigenvalues) == len(first.eigenvalues)
    assert list((tmp_path / "spectra").glob("*-weight-float64-v*.parquet"))
    monkeypatch.setattr(cache, "SPECTRA_VERSION", "999")  # a new metric-code version recomputes
    cache.cached_weight_spectra(tiny_llama)
    assert len(calls) == 2
    with torch.no_grad():  # changed weights -> new fingerprint -> recomputed
        tiny_llama.model.layers[0].mlp.up_proj.weight.mul_(2.0)
    cache.cached_weight_spectra(tiny_llama)
    assert len(calls) == 3


def test_cli_rejects_unknown_output_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    from pruning.cli import main

    assert main(["spectra", "--out", "spectra.txt"]) == 2
    assert "--out" in capsys.readouterr().err
