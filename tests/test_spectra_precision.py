"""Spectra do not depend on the device: the default eigen-solver path agrees with a float64 SVD of
W within 1e-3 in every metric (DESIGN.md "ESD"; pruning.spectral.esd).

The old GPU default (float32 eigenvalues of the Gram matrix W^T W) loses the small eigenvalues,
which move AlphaPruning's log-histogram peak and so ``alpha_peak``; the constructed matrix below
is one on which it gives another ``alpha_peak``. Set ``PRUNING_LAB_TEST_DEVICE=cuda`` to run the
real-model comparison on a GPU as well (bench/RESULTS.md records that run on the H200).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pytest
import torch

from pruning.config.run_config import RunConfig
from pruning.spectral import compute_weight_spectra
from pruning.spectral.esd import default_eig_dtype, eig_dtype_from_name
from pruning.spectral.summary import SpectrumJob, summarize_spectra
from pruning.spectral.weights import weight_matrices
from pruning.model.synthetic import random_llama

# every float metric of a row; alphas compared absolutely, scale-carrying ones relatively
ABSOLUTE = ("alpha", "alpha_peak", "alpha_mid", "alpha_weighted", "log_norm", "log_spectral_norm", "entropy",
            "entropy_norm", "rank_ratio", "D", "D_peak", "D_mid")
RELATIVE = ("stable_rank", "effective_rank", "xmin", "xmin_peak", "xmin_mid", "esd_peak", "lambda_max")
EXACT = ("num_rank", "n_tail", "n_tail_peak", "n_tail_mid", "n_eigs")
TOL = 1e-3


def svd_reference(model: torch.nn.Module, name: str = "reference") -> pd.DataFrame:
    """The spectra table from float64 singular values of every W on the CPU (lambda = sigma^2)."""
    from pruning.model.families import family_for

    jobs = []
    for ref in weight_matrices(model, family_for(model)):
        W = ref.module.weight.detach().to("cpu", torch.float64)
        job = SpectrumJob(ref.block, ref.matrix_type, ref.name, "weight", *ref.shape, numel=ref.numel)
        job.eigenvalues = torch.linalg.svdvals(W).pow(2).flip(0)  # ascending
        jobs.append(job)
    return summarize_spectra(jobs, name, torch.float64, keep_eigenvalues=False).table


def disagreements(ours: pd.DataFrame, ref: pd.DataFrame) -> list[str]:
    """'name column ours ref' for every metric outside the tolerance (NaN must match NaN)."""
    a, b = ours.set_index("name"), ref.set_index("name")
    assert sorted(a.index) == sorted(b.index)
    bad = []
    for col in [c for c in ABSOLUTE + RELATIVE + EXACT if c in a.columns]:
        for name in b.index:
            x, y = float(a.at[name, col]), float(b.at[name, col])
            if math.isnan(x) or math.isnan(y):
                ok = math.isnan(x) and math.isnan(y)
            elif col in EXACT:
                ok = x == y
            else:
                ok = abs(x - y) <= TOL * (max(1.0, abs(y)) if col in RELATIVE else 1.0)
            if not ok:
                bad.append(f"{name} {col} {x:.6g} {y:.6g}")
    return bad


def ill_conditioned(m: int, n: int, seed: int = 0) -> torch.Tensor:
    """W ``(m, n)`` float32 with known squared singular values: 3/4 of them clustered at
    1e-10..2e-10 (so the log-histogram peaks there) and a Pareto(1.5) tail above 1. In float32 the
    Gram matrix holds those small eigenvalues only as noise of ~1e-7 * lambda_max."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))
    k = 3 * m // 4
    low = 1e-10 * 10 ** (0.3 * torch.rand(k, generator=g, dtype=torch.float64))
    tail = (1 - torch.rand(m - k, generator=g, dtype=torch.float64)) ** (-1 / 1.5)
    lam = torch.cat([low, tail])
    return ((U * lam.sqrt()) @ V.T).float()


def _devices() -> list[str]:
    extra = os.environ.get("PRUNING_LAB_TEST_DEVICE", "")
    return ["cpu"] + ([extra] if extra and extra != "cpu" else [])


def test_default_precision_is_float64_on_every_device() -> None:
    assert default_eig_dtype() == torch.float64  # on every device: it takes none
    assert eig_dtype_from_name(None) == eig_dtype_from_name("auto") == torch.float64
    assert eig_dtype_from_name("float32") == torch.float32
    with pytest.raises(ValueError, match="'float16' is invalid; accepted: float64, float32"):
        eig_dtype_from_name("float16")


@pytest.mark.parametrize("device", _devices())
def test_ill_conditioned_matrix_float32_gram_moves_alpha_peak_default_does_not(device: str) -> None:
    model = random_llama(hidden=128, layers=1, intermediate=256, heads=4, kv_heads=2, vocab=64, seed=0)
    o_proj = model.model.layers[0].self_attn.o_proj
    with torch.no_grad():
        o_proj.weight.copy_(ill_conditioned(128, 128))
    model.to(device)
    ref = svd_reference(model)
    default = compute_weight_spectra(model, device=device).table
    assert set(default["eig_dtype"]) == {"float64"}
    assert disagreements(default, ref) == []
    f32 = compute_weight_spectra(model, device=device, dtype=torch.float32).table
    assert set(f32["eig_dtype"]) == {"float32"}  # the option is recorded in every row it made
    name = "model.layers.0.self_attn.o_proj"
    ref_peak = float(ref.set_index("name").at[name, "alpha_peak"])
    f32_peak = float(f32.set_index("name").at[name, "alpha_peak"])
    assert float(ref.set_index("name").at[name, "esd_peak"]) < 1e-9  # the peak sits in the 1e-10 cluster
    assert abs(f32_peak - ref_peak) > 0.5  # float32 Gram: the cluster is noise, the peak moves to the tail


def test_pipeline_spectra_precision_follows_the_config_and_changes_the_run_id_only_when_not_default() -> None:
    base = RunConfig()
    assert base.allocation.eig_dtype == "float64"
    assert "eig_dtype" not in base.canonical_json()  # run ids of runs published before the field stay
    f32 = base.with_overrides({"allocation.eig_dtype": "float32"})
    assert f32.run_id != base.run_id and '"eig_dtype":"float32"' in f32.canonical_json()
    from pruning.errors import ConfigError

    with pytest.raises(ConfigError, match="allocation.eig_dtype: 'float16' is invalid"):
        base.with_overrides({"allocation.eig_dtype": "float16"})


def test_cache_never_serves_a_float32_spectrum_as_the_default(tiny_llama, tmp_path, monkeypatch) -> None:
    from pruning.app_support.spectra import run_eigenvalues
    from pruning.config.run_config import RunConfig
    from pruning.run.spectra_cache import cached_weight_spectra, publish_spectra
    from pruning.store.publish import publish_run

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path))
    store = tmp_path / "data" / "store"
    f32 = cached_weight_spectra(tiny_llama, dtype=torch.float32, store=store)
    default = cached_weight_spectra(tiny_llama, store=store)
    assert set(f32.table["eig_dtype"]) == {"float32"} and set(default.table["eig_dtype"]) == {"float64"}
    files = sorted(p.name for p in (tmp_path / "spectra").glob("*.parquet") if not p.name.endswith(".eigs.parquet"))
    assert len(files) == 2 and any("-float32-" in f for f in files) and any("-float64-" in f for f in files)
    # the app's eigenvalue reader takes the set of the run row's precision, never the other one
    runs = {}
    for result, dtype in ((f32, "float32"), (default, "float64")):
        publish_spectra(result, root=store)
        config = RunConfig.from_dict({"model": {"name": "tiny"}, "label": dtype,
                                      "allocation": {"strategy": "linear", "eig_dtype": dtype}})
        runs[dtype] = publish_run(config, tables={"spectra": result.table}, root=store).bundle
    name = "model.layers.0.self_attn.q_proj"
    f32_eigs = f32.eigenvalues[f32.eigenvalues["name"] == name]["eigenvalue"].to_numpy()
    f64_eigs = default.eigenvalues[default.eigenvalues["name"] == name]["eigenvalue"].to_numpy()
    assert not np.array_equal(np.sort(f32_eigs), np.sort(f64_eigs))
    assert np.array_equal(run_eigenvalues(runs["float64"], name, "weight", root=store), np.sort(f64_eigs))
    assert np.array_equal(run_eigenvalues(runs["float32"], name, "weight", root=store), np.sort(f32_eigs))
    assert run_eigenvalues(runs["float64"], name, "weight", eig_dtype="float32", root=store) is None
    with pytest.raises(ValueError, match="eig_dtype: 'half' is invalid"):
        run_eigenvalues(runs["float64"], name, "weight", eig_dtype="half", root=store)


@pytest.fixture(scope="module")
def smollm2_reference(offline_model) -> pd.DataFrame:
    return svd_reference(offline_model.model)


@pytest.mark.slow
@pytest.mark.parametrize("device", _devices())
def test_real_smollm2_default_path_agrees_with_float64_svd(offline_model, smollm2_reference, device) -> None:
    table = compute_weight_spectra(offline_model, device=device).table
    assert len(table) == 210 and set(table["eig_dtype"]) == {"float64"}
    assert disagreements(table, smollm2_reference) == []


@pytest.mark.slow
@pytest.mark.shipped
def test_shipped_runs_weight_spectra_agree_with_float64(offline_model, smollm2_reference) -> None:
    """Every float32 SmolLM2 run in the shipped store (latest attempt: what every view reads) stored weight
    spectra that agree with the float64 SVD reference; the float32 rows of the first grid are
    history (earlier attempts), re-run as new attempts (docs/FINDINGS.md 'What changed')."""
    from pruning.store import run_sql

    spectra = run_sql(
        "SELECT s.* FROM spectra s JOIN runs r USING (run_id) "
        "WHERE r.model = 'smollm2-135m' AND r.kind = 'run' AND s.source = 'weight' "
        # a bfloat16 run's spectra are of its bfloat16 weights (the precision check's twins): another matrix
        "AND coalesce(json_extract_string(r.config_json, '$.model.dtype'), 'float32') = 'float32'")
    assert spectra["run_id"].nunique() >= 69
    assert set(spectra["eig_dtype"]) == {"float64"}
    for run_id, rows in spectra.groupby("run_id"):
        cols = ["name"] + [c for c in ABSOLUTE + RELATIVE + EXACT if c in rows.columns]
        assert disagreements(rows[cols], smollm2_reference[cols]) == [], run_id
