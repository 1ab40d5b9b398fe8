"""Spectra live in the results store (issue 18): a run published from another data directory shows
its weight and Hessian ESDs with no model and no cache; a second run of the same model reuses the
stored set (the same precision only); a corrupt stored set is quarantined, never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

import pruning.model.load
import pruning.run.spectra_cache as cache
from pruning.app_support.spectra import run_eigenvalues
from pruning.config.run_config import RunConfig
from pruning.model.families import family_for
from pruning.model.load import LoadedModel, ModelSource, model_fingerprint
from pruning.run.spectra_cache import cached_hessian_spectra, cached_weight_spectra, publish_spectra
from pruning.store import queries
from pruning.store.publish import publish_run

REPO = Path(__file__).resolve().parents[1]
Q = "model.layers.0.self_attn.q_proj"
DOWN = "model.layers.1.mlp.down_proj"


def _loaded(model: torch.nn.Module) -> LoadedModel:
    return LoadedModel(model, None, family_for(model), ModelSource("local", "tiny", "tiny"), model_fingerprint(model), 0.0)


def _calibration() -> torch.Tensor:
    return torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(0))


def _eigs(result, name: str) -> np.ndarray:
    frame = result.eigenvalues
    return np.sort(frame.loc[frame["name"] == name, "eigenvalue"].to_numpy())


def _publish_hessian_run(loaded: LoadedModel, store: Path) -> tuple[str, object, object]:
    """A 'Ray node' run: spectra computed there, its sets and the run published into ``store``."""
    weight = cached_weight_spectra(loaded, store=store)
    hessian = cached_hessian_spectra(loaded, _calibration(), store=store)
    assert (weight.origin, hessian.origin) == ("computed", "computed")
    for result in (weight, hessian):
        publish_spectra(result, root=store)
    config = RunConfig.from_dict({"model": {"name": "tiny"}, "label": "ray-node",
                                  "allocation": {"strategy": "linear", "metric": "hessian_alpha"}})
    spectra = pd.concat([weight.table, hessian.table], ignore_index=True)
    run = publish_run(config, tables={"spectra": spectra}, env={"model_fingerprint": loaded.fingerprint}, root=store)
    return run.bundle, weight, hessian


@pytest.fixture()
def no_model_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's host: an empty cache directory and no way to load a model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the dashboard loaded a model")

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "dashboard-cache"))
    monkeypatch.setattr(pruning.model.load, "load_model", refuse)
    monkeypatch.setattr(cache, "compute_weight_spectra", refuse)
    monkeypatch.setattr(cache, "hessian_spectra", refuse)


def test_run_from_another_data_dir_shows_weight_and_hessian_esd(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "node-cache"))
    node = tmp_path / "node-data"
    run_id, weight, hessian = _publish_hessian_run(_loaded(tiny_llama), node / "store")

    # the dashboard: reads node's data directory, its own (empty) cache, cannot load models
    monkeypatch.setenv("PRUNING_LAB_DATA", str(node))
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "dashboard-cache"))
    monkeypatch.setattr(pruning.model.load, "load_model",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    queries.clear_cache()
    for name in (Q, DOWN):
        np.testing.assert_array_equal(run_eigenvalues(run_id, name, "weight"), _eigs(weight, name))
        np.testing.assert_array_equal(run_eigenvalues(run_id, name, "hessian"), _eigs(hessian, name))
    assert not _eigs(weight, DOWN).tolist() == _eigs(hessian, DOWN).tolist()
    assert not (tmp_path / "dashboard-cache" / "spectra").exists() or not any((tmp_path / "dashboard-cache" / "spectra").iterdir())

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["sb_runs"] = [run_id]
    at.session_state["spectra_matrix"] = DOWN
    at.run()
    at.switch_page("pages/spectra.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [i.value for i in at.info if "No stored eigenvalues" in i.value]
    esd = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
    names = {t.get("name") for t in esd["data"]}
    assert {"weight ESD", "hessian ESD"} <= names
    # each panel's λ axis spans its spectrum (padded symmetrically in log10): same midpoints
    mids = sorted(round(float(np.mean(v["range"])), 9) for k, v in esd["layout"].items()
                  if k.startswith("xaxis") and "range" in v)
    expected = sorted(round(float(np.mean(np.log10([e[e > 0].min(), e.max()]))), 9)
                      for e in (_eigs(weight, DOWN), _eigs(hessian, DOWN)))
    assert mids == expected and mids[0] != mids[1]


def test_second_run_reuses_the_stored_set_of_its_precision_only(tiny_llama, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "first-cache"))
    store = tmp_path / "data" / "store"
    loaded = _loaded(tiny_llama)
    _, weight, hessian = _publish_hessian_run(loaded, store)

    # a second run on another machine (empty cache) that must not compute anything
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "second-cache"))
    calls: list[str] = []
    real_weight, real_hessian = cache.compute_weight_spectra, cache.hessian_spectra
    monkeypatch.setattr(cache, "compute_weight_spectra", lambda *a, **k: calls.append("weight") or real_weight(*a, **k))
    monkeypatch.setattr(cache, "hessian_spectra", lambda *a, **k: calls.append("hessian") or real_hessian(*a, **k))
    again_w = cached_weight_spectra(loaded, store=store)
    again_h = cached_hessian_spectra(loaded, _calibration(), store=store)
    assert calls == [] and (again_w.origin, again_h.origin) == ("store", "store") and again_w.reused and again_h.reused
    assert again_w.key == weight.key and again_h.key == hessian.key and again_w.key != again_h.key
    pd.testing.assert_frame_equal(again_w.table.set_index("name").sort_index()[["alpha", "alpha_peak", "lambda_max"]],
                                  weight.table.set_index("name").sort_index()[["alpha", "alpha_peak", "lambda_max"]])
    np.testing.assert_array_equal(_eigs(again_h, DOWN), _eigs(hessian, DOWN))
    assert publish_spectra(again_w, root=store) is None  # stored once: nothing to publish

    # another precision or another calibration batch is another set: computed, not reused
    f32 = cached_weight_spectra(loaded, dtype=torch.float32, store=store)
    assert calls == ["weight"] and f32.origin == "computed" and not f32.reused and "-float32-" in f32.key
    other = cached_hessian_spectra(loaded, _calibration()[:2], store=store)
    assert calls == ["weight", "hessian"] and other.origin == "computed"
    assert set(queries.stored_spectra(loaded.fingerprint, root=store)["spectra_key"]) == {weight.key, hessian.key}
    # the local cache still serves a set the store lacks, and says so
    assert cached_weight_spectra(loaded, dtype=torch.float32, store=store).origin == "cache"


def test_corrupt_stored_set_is_quarantined_not_fatal(tiny_llama, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "data" / "store"
    loaded = _loaded(tiny_llama)
    run_id, weight, _ = _publish_hessian_run(loaded, store)
    bundle = store / "runs" / f"spectra-{weight.key}"
    eig_file = bundle / "eigenvalues.parquet"
    eig_file.write_bytes(eig_file.read_bytes()[: eig_file.stat().st_size // 2])  # truncated
    queries.clear_cache()

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "empty-cache"))
    assert run_eigenvalues(run_id, Q, "weight", root=store) is None  # the app shows an info box
    recomputed = cached_weight_spectra(loaded, store=store)  # the run computes again
    assert recomputed.origin == "computed"
    np.testing.assert_array_equal(_eigs(recomputed, Q), _eigs(weight, Q))
    assert any("quarantined" in r.getMessage() and "eigenvalues.parquet" in r.getMessage() for r in caplog.records)
    # the Hessian set and the run itself are untouched
    assert run_eigenvalues(run_id, Q, "hessian", root=store) is not None
    from pruning.store.verify import verify_store

    report = verify_store(store)
    assert [p.relative(store) for p in report.problems] == [f"runs/spectra-{weight.key}/eigenvalues.parquet"]


def test_backfill_stores_the_set_of_an_older_run_after_checking_it(tiny_llama, tmp_path, monkeypatch) -> None:
    import pruning.run.spectra_backfill as backfill
    from pruning.spectral import compute_weight_spectra

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "cache"))
    store = tmp_path / "data" / "store"
    loaded = _loaded(tiny_llama)
    old = compute_weight_spectra(loaded)  # a run from before sets: no spectra_key, a fingerprint of then
    runs = {}
    for label, scale, epsilon in (("same", 1.0, 0.2), ("other", 1.01, 0.3)):
        config = RunConfig.from_dict({"model": {"name": "tiny"}, "label": label,
                                      "allocation": {"strategy": "linear", "epsilon": epsilon}})
        table = old.table.assign(lambda_max=old.table["lambda_max"] * scale)
        runs[label] = publish_run(config, tables={"spectra": table}, env={"model_fingerprint": "0123456789abcdef"},
                                  root=store).bundle
    assert run_eigenvalues(runs["same"], Q, "weight", root=store) is None
    monkeypatch.setattr(backfill, "load_model", lambda *a, **k: loaded)

    groups = backfill.missing_spectra(store)
    assert [(g.source, sorted(g.run_ids)) for g in groups] == [("weight", sorted(runs.values()))]
    [outcome] = backfill.backfill_spectra(store)
    # the 'other' run's rows disagree with these weights (lambda_max 1 % off): nothing is stored
    assert outcome.status == "skipped" and runs["other"] in outcome.reason and "lambda_max" in outcome.reason
    assert run_eigenvalues(runs["same"], Q, "weight", root=store) is None

    monkeypatch.setattr(backfill, "missing_spectra", lambda root=None: [
        backfill.BackfillGroup("tiny", "weight", "float64", "", (runs["same"],))])
    [outcome] = backfill.backfill_spectra(store)
    assert outcome.status == "stored"
    np.testing.assert_array_equal(run_eigenvalues(runs["same"], Q, "weight", root=store), _eigs(old, Q))
    assert run_eigenvalues(runs["other"], Q, "weight", root=store) is None  # its rows match no stored set
    assert backfill.backfill_spectra(store)[0].status == "present"


def test_spectra_set_key_names_and_rejects_bad_values() -> None:
    from pruning.store.spectra_sets import SpectraSetKey

    key = SpectraSetKey("0123456789abcdef", "hessian", "float64", "1", "a1b2c3d4e5f6")
    assert key.name == "0123456789abcdef-hessian-float64-v1-a1b2c3d4e5f6"
    assert key.bundle == "spectra-" + key.name and SpectraSetKey.parse(key.bundle) == key
    assert SpectraSetKey.parse("0123456789abcdef-weight-float32-v1").eig_dtype == "float32"
    with pytest.raises(ValueError, match="source: 'bias' is invalid"):
        SpectraSetKey("0123456789abcdef", "bias", "float64", "1")
    with pytest.raises(ValueError, match="eig_dtype: 'float16' is invalid"):
        SpectraSetKey("0123456789abcdef", "weight", "float16", "1")
    with pytest.raises(ValueError, match="needs the digest of its calibration batch"):
        SpectraSetKey("0123456789abcdef", "hessian", "float64", "1")
    with pytest.raises(ValueError, match="spectra set name: 'x-y' is invalid"):
        SpectraSetKey.parse("x-y")


@pytest.mark.shipped
def test_shipped_runs_show_their_weight_and_hessian_esd_from_the_store(tmp_path, monkeypatch) -> None:
    """Every shipped run with spectra finds its stored weight and Hessian sets, and the spectra page draws
    both ESDs of a shipped Hessian run (no model, no cache directory)."""
    import shutil

    shutil.copytree(REPO / "data" / "store", tmp_path / "data" / "store",
                    ignore=shutil.ignore_patterns("tmp", ".lock", "quarantine"))
    monkeypatch.setenv("PRUNING_LAB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(pruning.model.load, "load_model",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    queries.clear_cache()
    # the allocation study's first batch (2026-12-01) ran before runs published their spectra sets; its
    # Hessian set (calibration wiki:train) is stored by the study's next batch, which computes it again
    rows = queries.run_sql("""SELECT run_id, source, arg_max(name, lambda_max) AS name, max(lambda_max) AS lambda_max
                              FROM spectra WHERE lambda_max > 0 AND run_id NOT IN (
                                  SELECT run_id FROM runs WHERE list_contains(coalesce(config_tags, []), 'allocation-study'))
                              GROUP BY run_id, source""")
    assert (rows["source"] == "weight").sum() >= 69 and (rows["source"] == "hessian").sum() >= 16
    for row in rows.itertuples(index=False):
        eig = run_eigenvalues(row.run_id, row.name, row.source)
        assert eig is not None, (row.run_id, row.source)
        assert eig[-1] == pytest.approx(row.lambda_max, rel=1e-5)

    run_id = str(rows.loc[rows["source"] == "hessian", "run_id"].iloc[0])
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.session_state["sb_runs"] = [run_id]
    at.session_state["spectra_matrix"] = "model.layers.9.mlp.down_proj"
    at.run()
    at.switch_page("pages/spectra.py").run()
    assert not at.exception, [e.value for e in at.exception]
    esd = [json.loads(c.proto.spec) for c in at.get("plotly_chart")][-1]
    assert {"weight ESD", "hessian ESD"} <= {t.get("name") for t in esd["data"]}


def test_workers_starting_together_compute_a_spectra_set_once(tiny_llama, tmp_path, monkeypatch) -> None:
    """Issue 26: 8 workers on one H200 computed the same weight spectra twice (47 s each); the cache's
    per-set lock makes the others wait and read the first one's result."""
    import threading
    import time

    monkeypatch.setenv("PRUNING_LAB_CACHE", str(tmp_path / "cache"))
    computed = []
    real = cache.compute_weight_spectra

    def slow(*args, **kwargs):
        computed.append(1)
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(cache, "compute_weight_spectra", slow)
    loaded = _loaded(tiny_llama)
    origins = []
    threads = [threading.Thread(target=lambda: origins.append(
        cached_weight_spectra(loaded, store=tmp_path / "store").origin)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(computed) == 1 and sorted(origins) == ["cache", "cache", "cache", "computed"]
