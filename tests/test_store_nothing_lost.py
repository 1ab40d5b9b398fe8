"""Issue 27, item 1: a lost or unreadable catalog manifest never leads to deletion. On a bulk-loaded
store (runs that only the catalog's part files hold) with published bundles beside them, deleting or
corrupting ``catalog/manifest.json`` used to make ``verify`` print "0 runs readable, no problems" and
the next ``compact`` delete every part file. Now verify reports it, compaction and bulk appends refuse,
nothing is deleted, and ``verify --repair`` gives back every run with the same numbers."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pandas as pd
import pytest

from pruning.config.run_config import RunConfig
from pruning.store import compact, list_runs, publish_run
from pruning.store.compaction import bulk_append
from pruning.store.errors import StoreError
from pruning.store.layout import store_root
from pruning.store.verify import repair_store, verify_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.store import generate  # noqa: E402


def _inventory(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under the store, by relative path."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".lock" not in p.name}


def _results(root: Path) -> pd.DataFrame:
    runs = list_runs(root=root)
    return runs[["run_id", "status", "ppl"]].sort_values("run_id").reset_index(drop=True)


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """200 bulk-loaded runs, then two published runs compacted (full: the bulk parts are retired and
    rewritten), then a third published run left loose; every part older than the grace period."""
    from pruning.store import compaction

    root = tmp_path / "data" / "store"
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))
    store_root()
    generate(root, n_runs=200, per_run=7)
    for sparsity, ppl in ((0.5, 30.0), (0.6, 41.0)):
        cfg = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": sparsity})
        publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128,
                                                              "n_windows": 4, "total_windows": 4, "ppl": ppl}])})
    assert compact(full=True)
    cfg = RunConfig().with_overrides({"pruning.method": "magnitude", "pruning.sparsity": 0.7})
    publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128,
                                                          "n_windows": 4, "total_windows": 4, "ppl": 99.0}])})
    monkeypatch.setattr(compaction, "RETIRED_GRACE_S", 0.0)  # every part is past its grace
    return root


@pytest.mark.parametrize("damage", ["delete", "corrupt"])
def test_a_lost_manifest_is_reported_never_deleted_and_repaired(store: Path, damage: str) -> None:
    before = _results(store)
    assert len(before) == 203 and before["ppl"].notna().sum() >= 200
    manifest = store / "catalog" / "manifest.json"
    if damage == "delete":
        manifest.unlink()
    else:
        manifest.write_text('{"generation": 3, "parts": ')
    files = _inventory(store)

    report = verify_store(store)
    assert not report.ok and report.problems[0].kind == "manifest"
    assert ("missing" if damage == "delete" else "unreadable") in report.problems[0].reason
    with pytest.raises(StoreError, match="quarantined"):
        compact(store)  # refuses: no clean-up can run without the manifest
    with pytest.raises(StoreError):
        bulk_append({"runs": pd.DataFrame()}, root=store)
    assert _inventory(store) == files  # nothing written, nothing deleted

    repaired = repair_store(store)
    assert repaired.after.ok, repaired.after.problems
    moved = {rel for rel, _ in repaired.moved}
    assert moved == (set() if damage == "delete" else {"catalog/manifest.json"})  # no part set aside
    pd.testing.assert_frame_equal(_results(store), before)

    # clean-up afterwards deletes only parts the rebuilt manifests retired; every run stays
    compact(store)
    compact(store, full=True)
    compact(store)
    pd.testing.assert_frame_equal(_results(store), before)
    assert verify_store(store).ok


def test_an_orphan_part_is_never_deleted_by_clean_up(store: Path) -> None:
    """A part file the manifest does not know (a compaction killed before its manifest) is not garbage."""
    parts = store / "catalog" / "parts"
    orphan = parts / "runs-000099.parquet"
    orphan.write_bytes((parts / sorted(p.name for p in parts.glob("runs-*.parquet"))[0]).read_bytes())
    compact(store)
    compact(store, full=True)
    compact(store)
    assert orphan.exists()


def test_a_fifo_in_the_store_is_reported_not_waited_on(store: Path) -> None:
    """Issue 27, item 6: a FIFO at annotations/<run>.json hung `runs` and `verify` (killed at 60 s)."""
    import os
    import threading

    run_id = _results(store)["run_id"].iloc[0]
    fifo = store / "annotations" / f"{run_id}.json"
    fifo.parent.mkdir(exist_ok=True)
    os.mkfifo(fifo)
    out: dict[str, object] = {}
    worker = threading.Thread(target=lambda: out.update(runs=len(list_runs(root=store)), report=verify_store(store)),
                              daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "a reader blocked on the FIFO"
    assert out["runs"] == 203
    problem = out["report"].problems[0]
    assert problem.path == fifo and "FIFO" in problem.reason
    assert repair_store(store).after.ok and not os.path.lexists(fifo)  # moved aside, not deleted


def test_repair_keeps_the_catalogs_intact_rows_over_an_older_attempt(tmp_path: Path, monkeypatch) -> None:
    """Issue 27, items 2 and 3: a damaged data page in the attempt the catalog serves used to make
    repair fall back to the older attempt (wiki 829.47 became 951.18) and `verify` call it clean; a
    `repack --rebuild-catalog` afterwards dropped the run. The catalog's readable rows win now, and
    repack refuses."""
    from pruning.store.repack import repack_store

    root = tmp_path / "data" / "store"
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))
    cfg = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.6})

    def ppl(value: float) -> dict[str, pd.DataFrame]:
        return {"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128, "n_windows": 4,
                                             "total_windows": 4, "ppl": value}])}

    publish_run(cfg, tables=ppl(951.18))
    publish_run(cfg, tables=ppl(829.47))
    assert compact(full=True)
    assert list_runs(root=root)["ppl"].tolist() == [829.47]
    page = root / "runs" / f"{cfg.run_id}~2" / "perplexity.parquet"
    data = bytearray(page.read_bytes())
    data[4:40] = b"\xff" * 36  # the first data page, the footer intact
    page.write_bytes(bytes(data))
    assert not verify_store(root).ok
    repaired = repair_store(root)
    assert repaired.after.ok
    assert list_runs(root=root)["ppl"].tolist() == [829.47]  # not the older attempt's 951.18
    with pytest.raises(StoreError, match="set aside"):
        repack_store(root, rebuild=True)
    assert list_runs(root=root)["ppl"].tolist() == [829.47]


def test_a_bundle_claiming_another_runs_id_is_reported_and_left_out(tmp_path: Path, monkeypatch) -> None:
    """Issue 27, item 4: a second bundle claiming an existing run id listed the run twice and gave fake
    perplexity rows beside the real ones; `verify` exited 0."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pruning.store import run_table

    root = tmp_path / "data" / "store"
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))
    cfg = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.6})
    publish_run(cfg, tables={"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128,
                                                          "n_windows": 4, "total_windows": 4, "ppl": 42.0}])})
    real = root / "runs" / cfg.run_id
    fake = root / "runs" / "impostor-1"
    fake.mkdir()
    for path in real.glob("*.parquet"):  # the same rows, its own bundle name, the real run's id
        table = pq.read_table(path)
        table = table.set_column(table.schema.get_field_index("bundle"), "bundle", pa.array(["impostor-1"] * len(table)))
        if path.stem == "perplexity":
            table = table.set_column(table.schema.get_field_index("ppl"), "ppl", pa.array([1.5] * len(table)))
        pq.write_table(table, fake / path.name)
    import json

    manifest = json.loads((real / "manifest.json").read_text())
    manifest.update(bundle="impostor-1", files={})  # a writer that records no checksums, as an old store's bundles
    (fake / "manifest.json").write_text(json.dumps(manifest))
    assert list_runs(root=root)["run_id"].tolist() == [cfg.run_id]  # listed once
    assert run_table(cfg.run_id, "perplexity", root=root)["ppl"].tolist() == [42.0]  # no fake row beside it
    report = verify_store(root)
    assert not report.ok and report.problems[0].bundle == "impostor-1" and cfg.run_id in report.problems[0].reason
    compact(root)  # the impostor is not folded in
    assert run_table(cfg.run_id, "perplexity", root=root)["ppl"].tolist() == [42.0]
    assert repair_store(root).after.ok and not fake.exists()
    assert list_runs(root=root)["run_id"].tolist() == [cfg.run_id]


def _flip_value(path: Path, old: float, new: float) -> None:
    """Overwrite the stored double ``old`` with ``new`` in place: the file keeps its size and still decodes."""
    import struct

    data = path.read_bytes()
    at = data.find(struct.pack("<d", old))
    assert at > 0, "the value is not stored plainly"
    path.write_bytes(data[:at] + struct.pack("<d", new) + data[at + 8:])


def test_corruption_that_still_decodes_is_found_by_its_checksum(tmp_path: Path, monkeypatch) -> None:
    """Issue 27, item 5: flipped bytes in a catalog part kept it decodable and `max(value)` became 5.8e299;
    nothing recorded a checksum. Every part and bundle file records one now, and `verify` checks it."""
    root = tmp_path / "data" / "store"
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))

    def ppl(value: float) -> dict[str, pd.DataFrame]:
        return {"perplexity": pd.DataFrame([{"stage": "pruned", "dataset": "wiki", "seqlen": 128, "n_windows": 4,
                                             "total_windows": 4, "ppl": value}])}

    compacted = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.6})
    loose = RunConfig().with_overrides({"pruning.method": "wanda", "pruning.sparsity": 0.7})
    publish_run(compacted, tables=ppl(192.0625))
    assert compact(full=True)
    publish_run(loose, tables=ppl(311.5))
    part = next((root / "catalog" / "parts").glob("perplexity-*.parquet"))
    _flip_value(part, 192.0625, 5.8e299)
    _flip_value(root / "runs" / loose.run_id / "perplexity.parquet", 311.5, 7.7e299)
    assert sorted(list_runs(root=root)["ppl"]) == [5.8e299, 7.7e299]  # both decode: the readers cannot tell

    report = verify_store(root)
    bad = {p.path: p.reason for p in report.problems}
    assert set(bad) == {part, root / "runs" / loose.run_id / "perplexity.parquet"}
    assert all("checksum" in reason for reason in bad.values())
    assert verify_store(root, deep=False).ok  # --quick compares sizes only: same size, not found
    repaired = repair_store(root)
    assert repaired.after.ok
    assert list_runs(root=root).set_index("run_id")["ppl"].to_dict() == {compacted.run_id: 192.0625}


@pytest.mark.slow
def test_the_shipped_store_survives_a_lost_manifest(tmp_path: Path, monkeypatch) -> None:
    """Item 1 on a copy of the shipped store: the same runs and numbers after repair, and no file
    deleted before it."""
    import shutil

    from pruning.paths import REPO_ROOT
    from pruning.store import compaction

    root = tmp_path / "data" / "store"
    shutil.copytree(REPO_ROOT / "data" / "store", root, ignore=shutil.ignore_patterns("tmp", ".lock", "quarantine"))
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))
    monkeypatch.setattr(compaction, "RETIRED_GRACE_S", 0.0)
    before = _results(root)
    assert len(before) > 300
    (root / "catalog" / "manifest.json").unlink()
    files = _inventory(root)
    assert not verify_store(root, deep=False).ok
    with pytest.raises(StoreError):
        compact(root)
    assert _inventory(root) == files
    assert repair_store(root).after.ok
    pd.testing.assert_frame_equal(_results(root), before)
    compact(root, full=True)
    compact(root)
    pd.testing.assert_frame_equal(_results(root), before)
