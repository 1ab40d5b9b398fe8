"""The store's compact encoding and ``repack`` (pruning.store.repack): bundle files written without
statistics or an embedded Arrow schema read back equal; an old bundle's allocation loses exactly the
spectral columns its own spectra table gives every matrix (a column that differs in one value is
kept); every view reads the same before and after; a second repack changes nothing; a dry run writes
nothing; bulk-appended bundles are refused; and a run stores its allocation without the metric columns."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pruning.config.run_config import RunConfig
from pruning.run.stages import ALLOCATION_RECORD, allocation_record
from pruning.spectral.summary import METRIC_COLUMNS
from pruning.store import StoreError, compact, publish_run, run_table
from pruning.store.catalog import read_manifest, snapshot
from pruning.store.compaction import bulk_append
from pruning.store.layout import latest_attempts, store_root
from pruning.store.repack import copied_columns, encoded_as_store, repack_store
from pruning.store.schema import to_arrow
from pruning.store.views import connect

NAMES = ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.up_proj", "model.layers.1.self_attn.q_proj"]


def _spectra() -> pd.DataFrame:
    rows = []
    for i, name in enumerate(NAMES):
        row = {"model": "m", "block": int(name.split(".")[2]), "matrix_type": "q" if "q_proj" in name else "up",
               "name": name, "source": "weight", "numel": 100 * (i + 1), "status": "success"}
        row.update({c: float(i + 1) + 0.25 * k for k, c in enumerate(METRIC_COLUMNS)})
        row.update(n_tail=10 + i, n_eigs=50 + i)  # integer columns of the store's spectra table
        rows.append(row)
    return pd.DataFrame(rows)


def _allocation(spectra: pd.DataFrame, differ: bool) -> pd.DataFrame:
    """The allocation a linear run wrote before allocation_record: its own columns plus every metric
    column of the spectra pivot (weight metrics, hessian_* all NaN) and status."""
    alloc = spectra[["block", "matrix_type", "name", "numel"]].assign(
        unit=["block0", "block0", "block1"], score=[1.0, 1.0, 2.0], ratio=[0.9, 0.9, 1.1],
        sparsity_target=[0.63, 0.63, 0.77], sparsity_achieved=[0.63, 0.63, 0.77])
    for c in METRIC_COLUMNS:
        alloc[c] = spectra[c].to_numpy()
        alloc[f"hessian_{c}"] = np.nan
    alloc["status"] = spectra["status"].to_numpy()
    if differ:
        alloc.loc[2, "alpha"] = alloc.loc[2, "alpha"] + 1e-12  # not the spectra's value: must be kept
    return alloc


def _old_style_store(data_dir: Path) -> list[str]:
    """Two runs published, then their allocation and runs files rewritten as before the compact
    encoding (statistics, Arrow schema, copied metric columns); returns the run ids."""
    ids = []
    for i, differ in enumerate((False, True)):
        config = RunConfig().with_overrides({"pruning.sparsity": 0.6 + 0.1 * i, "allocation.strategy": "linear"})
        spectra = _spectra()
        result = publish_run(config, tables={
            "spectra": spectra, "allocation": _allocation(spectra, False)[list(ALLOCATION_RECORD)],
            "perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128, "ppl": 30.0 + i}])})
        bundle = result.path
        alloc = _allocation(spectra, differ).assign(run_id=config.run_id, bundle=result.bundle)
        pq.write_table(to_arrow("allocation", alloc), bundle / "allocation.parquet", compression="zstd")
        runs = pq.read_table(bundle / "runs.parquet")
        pq.write_table(runs, bundle / "runs.parquet", compression="zstd")  # statistics and schema: the old way
        ids.append(config.run_id)
    compact(full=True)
    return ids


def _views() -> dict[str, pd.DataFrame]:
    con = connect(snapshot())
    out = {}
    for table in ("runs", "spectra", "allocation", "perplexity"):
        df = con.execute(f"SELECT * FROM {table}").df()
        out[table] = df.sort_values(sorted(c for c in ("run_id", "name", "dataset") if c in df)).reset_index(drop=True)
    return out


def test_publish_writes_no_statistics_and_no_arrow_schema(data_dir: Path) -> None:
    config = RunConfig().with_overrides({"pruning.sparsity": 0.5})
    result = publish_run(config, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "ppl": 3.5}])})
    meta = pq.ParquetFile(result.path / "runs.parquet").metadata
    assert b"ARROW:schema" not in (meta.metadata or {})
    stats = {meta.schema.column(i).path: meta.row_group(0).column(i).is_stats_set for i in range(meta.num_columns)}
    assert stats.pop("bundle") and not any(stats.values())  # pruning.store.health reads the bundle's min/max
    assert encoded_as_store(result.path / "runs.parquet")
    back = pq.read_table(result.path / "runs.parquet")
    assert back.column("config_tags").type == pa.list_(pa.field("element", pa.string()))
    assert RunConfig.from_dict(json.loads(back.column("config_json")[0].as_py())).run_id == config.run_id


def test_repack_drops_only_copied_columns_and_keeps_every_view(data_dir: Path) -> None:
    same, differ = _old_style_store(data_dir)
    before = _views()
    sizes = {p: p.stat().st_size for p in (store_root() / "runs").rglob("*.parquet")}
    generation = read_manifest(store_root())[0].generation

    report = repack_store(drop_old_parts=True)

    # the old-style allocation and runs files are rewritten; spectra and perplexity were published in
    # the compact encoding already, and a rewrite that is not smaller leaves a file as it is
    assert (report.files, report.rewritten) == (len(sizes), 4) and report.catalog_rebuilt
    assert report.bytes_after < report.bytes_before
    metric_columns = set(METRIC_COLUMNS) | {f"hessian_{c}" for c in METRIC_COLUMNS} | {"status"}
    dirs = {run: d for run, (d, _) in latest_attempts(store_root()).items()}
    assert set(report.dropped[dirs[same]]) == metric_columns
    assert set(report.dropped[dirs[differ]]) == metric_columns - {"alpha"} and report.kept[dirs[differ]] == ["alpha"]
    assert "alpha" not in run_table(same, "allocation").columns
    kept = run_table(differ, "allocation")
    assert kept["alpha"].tolist() == pytest.approx([1.0, 2.0, 3.0 + 1e-12], abs=0) and kept["alpha"][2] != 3.0
    after = _views()
    for table, frame in before.items():
        columns = [c for c in frame.columns if c in after[table].columns and not (table == "allocation" and c == "alpha")]
        pd.testing.assert_frame_equal(frame[columns], after[table][columns], check_dtype=False)
    rows = before["allocation"]["run_id"] == differ
    np.testing.assert_array_equal(after["allocation"].loc[rows, "alpha"], before["allocation"].loc[rows, "alpha"])
    assert after["allocation"].loc[~rows, "alpha"].isna().all()  # dropped where it was a copy
    assert set(before["allocation"].columns) - set(after["allocation"].columns) == metric_columns - {"alpha"}
    manifest = read_manifest(store_root())[0]
    assert manifest.generation > generation and not manifest.retired
    live = {n for names in manifest.parts.values() for n in names}
    assert {p.name for p in (store_root() / "catalog" / "parts").iterdir()} == live  # old parts deleted

    again = repack_store()
    assert again.rewritten == 0 and not again.catalog_rebuilt and again.bytes_after == report.bytes_after


def test_dry_run_writes_nothing(data_dir: Path) -> None:
    _old_style_store(data_dir)
    files = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in store_root().rglob("*") if p.is_file()}
    report = repack_store(dry_run=True)
    assert report.rewritten == 0 and report.bytes_after < report.bytes_before and report.dropped
    assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in store_root().rglob("*") if p.is_file()} == files


def test_bulk_appended_bundles_are_refused(data_dir: Path) -> None:
    runs = pa.table({"bundle": ["bulk-1"], "run_id": ["bulk-1"], "kind": ["run"], "status": ["succeeded"]})
    store_root()  # created on first use
    publish_run(RunConfig(), tables={})
    bulk_append({"runs": runs})
    with pytest.raises(StoreError, match=r"1 bundle\(s\) without a directory \(bulk-1\)"):
        repack_store()


def test_copied_columns_without_spectra_keeps_everything() -> None:
    alloc = _allocation(_spectra(), False)
    dropped, kept = copied_columns(alloc, None)
    assert dropped == [] and "alpha_peak" in kept and "sparsity_target" not in kept and "unit" not in kept


def test_a_run_stores_its_allocation_without_metric_columns() -> None:
    alloc = _allocation(_spectra(), False).rename(columns={"sparsity_target": "sparsity"})
    record = allocation_record(alloc)
    assert list(record.columns) == list(ALLOCATION_RECORD)
    np.testing.assert_array_equal(record["sparsity_target"], [0.63, 0.63, 0.77])


def test_rebuild_drops_a_bundle_taken_out_by_hand(data_dir: Path) -> None:
    import shutil

    same, differ = _old_style_store(data_dir)
    repack_store(drop_old_parts=True)
    dirs = {run: d for run, (d, _) in latest_attempts(store_root()).items()}
    shutil.rmtree(store_root() / "runs" / dirs[differ])
    assert set(_views()["runs"]["run_id"]) == {same, differ}  # the catalog still serves it
    assert not repack_store().catalog_rebuilt  # nothing changed, nothing asked
    assert repack_store(rebuild=True).catalog_rebuilt  # the old parts retired, kept for the readers' grace
    assert len(list((store_root() / "catalog" / "parts").iterdir())) > len(read_manifest(store_root())[0].parts)
    report = repack_store(rebuild=True, drop_old_parts=True)
    assert report.rewritten == 0 and report.catalog_rebuilt
    assert set(_views()["runs"]["run_id"]) == {same}
    live = {n for names in read_manifest(store_root())[0].parts.values() for n in names}
    assert {p.name for p in (store_root() / "catalog" / "parts").iterdir()} == live  # earlier retired ones too
