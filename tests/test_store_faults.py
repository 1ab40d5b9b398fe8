"""Fault injection into a copy of a small store (issue 19): one bad file never takes the store down.

The store: the research notes (one reference bundle, 60 result sets) and runs A, B in the
compacted catalog; runs C, D loose; an annotation on A. For every fault — a truncated, corrupt or
foreign Parquet file of a run, a bad catalog part or manifest, a bad annotation — the other runs are
listed and queried (exact run ids), the grid page renders with a banner naming the file, ``verify``
names it and exits 1, ``verify --repair`` moves it under ``quarantine/`` and leaves a clean store
with the same readable runs. A read-only store is read by every reader and refused by every writer.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pruning.cli import main as cli
from pruning.config.run_config import RunConfig
from pruning.store import add_note, compact, list_runs, publish_run, run_attempts, run_sql
from pruning.store.catalog import read_manifest, snapshot
from pruning.store.health import clear_verdicts
from pruning.store.queries import clear_cache
from pruning.store.verify import repair_store, verify_store

REPO = Path(__file__).resolve().parents[1]
NOTES = REPO / "data" / "reference" / "research-notes.txt"
APP = str(REPO / "app.py")


def _config(method: str, sparsity: float) -> RunConfig:
    return RunConfig().with_overrides({"pruning.method": method, "pruning.sparsity": sparsity, "label": f"{method}-{sparsity}"})


def _tables(ppl: float) -> dict[str, pd.DataFrame]:
    return {
        "perplexity": pd.DataFrame([{"stage": s, "dataset": "wiki", "seqlen": 128, "n_windows": 4, "total_windows": 4,
                                     "ppl": p} for s, p in (("dense", 18.0), ("pruned", ppl))]),
        "metrics": pd.DataFrame({"stage": ["pruned"], "name": ["alpha_mean"], "value": [ppl / 10]}),
    }


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A small store built once: notes + A, B compacted; C, D loose; a note on A."""
    from pruning.importers.notes import import_notes

    root = tmp_path_factory.mktemp("template") / "store"
    import_notes(NOTES, root=root)
    ids = {}
    for name, method, sparsity, ppl in (("A", "wanda", 0.5, 30.0), ("B", "magnitude", 0.5, 90.0)):
        ids[name] = publish_run(_config(method, sparsity), tables=_tables(ppl), root=root).run_ids[0]
    assert compact(root, full=True)
    for name, method, sparsity, ppl in (("C", "sparsegpt", 0.5, 25.0), ("D", "wanda", 0.6, 40.0)):
        ids[name] = publish_run(_config(method, sparsity), tables=_tables(ppl), root=root).run_ids[0]
    add_note(ids["A"], "keep this one", root=root)
    return root, ids


@pytest.fixture()
def store(template, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict[str, str], set[str]]:
    """A fresh copy of the template as the store of this test (PRUNING_LAB_DATA); returns the
    store root, the run ids of A-D and every run id of the intact store."""
    src, ids = template
    root = tmp_path / "data" / "store"
    shutil.copytree(src, root, ignore=shutil.ignore_patterns("tmp", ".lock"))
    monkeypatch.setenv("PRUNING_LAB_DATA", str(root.parent))
    clear_cache()
    clear_verdicts()
    every = set(list_runs()["run_id"])
    assert set(ids.values()) <= every and len(every) == len(ids) + 60  # the notes hold 60 result sets
    assert not snapshot().problems and snapshot().loose.keys() == {ids["C"], ids["D"]}
    return root, ids, every


# ---- fault injectors: (root, ids) -> (bad path relative to the store, run ids that drop out of view) --------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_run_file(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    rel = f"runs/{ids['C']}/perplexity.parquet"
    _truncate(root / rel)
    return rel, {ids["C"]}


def garbage_run_file(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    rel = f"runs/{ids['D']}/runs.parquet"
    (root / rel).write_bytes(b"this is not parquet at all\n" * 40)
    return rel, {ids["D"]}


def corrupt_pages_run_file(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    """The footer intact, the data pages overwritten: only reading the data finds it."""
    rel = f"runs/{ids['D']}/perplexity.parquet"
    path = root / rel
    data = bytearray(path.read_bytes())
    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for i in range(4, footer_start):
        data[i] = 0xA5
    path.write_bytes(bytes(data))
    pq.read_metadata(path)  # the footer still reads: the light check passes
    return rel, {ids["D"]}


def foreign_table_as_runs(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    """The notes' perplexity table saved under run C's runs.parquet (the issue's 84 junk rows)."""
    rel = f"runs/{ids['C']}/runs.parquet"
    shutil.copyfile(root / "runs" / "ref-notes-research-notes" / "perplexity.parquet", root / rel)
    return rel, {ids["C"]}


def other_runs_rows_as_runs(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    """Run D's runs.parquet copied over run C's: valid schema, rows of another bundle."""
    rel = f"runs/{ids['C']}/runs.parquet"
    shutil.copyfile(root / "runs" / ids["D"] / "runs.parquet", root / rel)
    return rel, {ids["C"]}


def truncated_catalog_part(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    manifest, _ = read_manifest(root)
    rel = f"catalog/parts/{manifest.parts['perplexity'][0]}"
    _truncate(root / rel)
    return rel, set()  # every bundle is read from its directory instead


def corrupt_manifest(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    rel = "catalog/manifest.json"
    (root / rel).write_text('{"generation": 3, "parts": {"runs": [')
    return rel, set()


def corrupt_annotation(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    rel = f"annotations/{ids['B']}.json"
    (root / rel).write_text("{ not json")
    return rel, set()


def annotation_without_run_id(root: Path, ids: dict[str, str]) -> tuple[str, set[str]]:
    rel = f"annotations/{ids['C']}.json"
    (root / rel).write_text(json.dumps({"tags": ["x"], "notes": []}))
    return rel, set()


FAULTS: list[Callable[[Path, dict[str, str]], tuple[str, set[str]]]] = [
    truncated_run_file, garbage_run_file, corrupt_pages_run_file, foreign_table_as_runs, other_runs_rows_as_runs,
    truncated_catalog_part, corrupt_manifest, corrupt_annotation, annotation_without_run_id,
]


def _grid_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("pages/grid.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("inject", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_one_bad_file_is_quarantined_and_repaired(store, inject, capsys) -> None:
    root, ids, every = store
    rel, gone = inject(root, ids)
    clear_cache()
    readable = every - gone

    # the other runs are listed and queried (exact ids and counts), the good annotation still shows
    runs = list_runs()
    assert set(runs["run_id"]) == readable and len(runs) == len(readable)
    assert runs.set_index("run_id").at[ids["A"], "notes"] == "keep this one"
    mine = sorted(set(ids.values()) - gone)
    got = run_sql("SELECT r.run_id, p.ppl FROM runs r JOIN perplexity p USING (run_id) "
                  "WHERE p.stage = 'pruned' AND r.kind = 'run' ORDER BY r.run_id")
    assert got["run_id"].tolist() == mine
    assert cli(["query", "SELECT count(*) AS n FROM runs"]) == 0
    assert capsys.readouterr().out.split()[-1] == str(len(readable))

    # the grid page renders and its banner names the file (annotations included)
    at = _grid_page()
    assert not at.container(key="grid_table").dataframe[0].value.empty
    assert any(rel.split("/")[-1].replace("_", "\\_") in w.value for w in at.warning), [w.value for w in at.warning]

    # verify names the file and fails; the store is unchanged by it
    assert cli(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"quarantined: {rel}: " in out and out.strip().splitlines()[-1].startswith(f"verify: {len(readable)} runs readable, 1 file(s)")

    # repair moves it aside (never deleted), rebuilds the catalog; nothing readable is lost
    bad_bytes = (root / rel).read_bytes()
    assert cli(["verify", "--repair"]) == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith("verify --repair: moved") and "store clean" in summary, summary
    moved = list((root / "quarantine").glob(f"*/{rel}"))
    assert len(moved) == 1 and moved[0].read_bytes() == bad_bytes
    assert not (root / rel).exists() or rel == "catalog/manifest.json"  # a new manifest is written
    clear_cache()
    assert set(list_runs()["run_id"]) == readable
    assert cli(["verify"]) == 0 and "no problems" in capsys.readouterr().out
    assert verify_store().ok and not snapshot().problems and snapshot().catalog_trusted


def test_a_bad_newer_attempt_falls_back_to_the_previous_one(store) -> None:
    root, ids, every = store
    publish_run(_config("sparsegpt", 0.5), tables=_tables(21.0))  # C~2 supersedes C
    clear_cache()
    assert list_runs().set_index("run_id").at[ids["C"], "ppl"] == 21.0
    _truncate(root / "runs" / f"{ids['C']}~2" / "perplexity.parquet")
    clear_cache()
    runs = list_runs().set_index("run_id")
    assert set(runs.index) == every and runs.at[ids["C"], "ppl"] == 25.0  # the first attempt again
    attempts = run_attempts(ids["C"])  # one line per attempt; the truncated one marked, not a traceback
    assert attempts["status"].tolist() == ["succeeded", "unreadable"] and attempts["latest"].tolist() == [True, False]
    assert "perplexity.parquet" in attempts["problem"].iloc[1]


def test_compaction_never_folds_in_or_deletes_a_quarantined_file(store) -> None:
    root, ids, every = store
    truncated_run_file(root, ids)
    assert compact(full=True)
    assert (root / "runs" / ids["C"] / "perplexity.parquet").exists()
    clear_cache()
    assert set(list_runs()["run_id"]) == every - {ids["C"]}
    truncated_catalog_part(root, ids)
    assert cli(["compact"]) == 2  # refused in one line while a catalog file is quarantined


def test_runs_status_filter_names_accepted_values(store, capsys) -> None:
    assert cli(["runs", "--status", "bogus"]) == 2
    assert capsys.readouterr().err.strip() == "error: unknown run status 'bogus'; accepted: succeeded, failed"


def test_export_to_a_path_with_quotes(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "it's \"here\""
    assert cli(["export", "--format", "csv", "--out", str(out)]) == 0
    _, ids, every = store
    assert set(pd.read_csv(out / "runs.csv")["run_id"]) == every


# ---- read-only stores -----------------------------------------------------------------------------------------
def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under the data directory with its size and mtime (a reader must change none)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root.parent):
        for name in dirnames + filenames:
            st = os.lstat(Path(dirpath) / name)
            out[os.path.relpath(Path(dirpath) / name, root.parent)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture()
def read_only(store, monkeypatch: pytest.MonkeyPatch):
    """The store of a fresh checkout (no tmp/, no .lock) behind a read-only file system: every
    write under the data directory raises EROFS (tests run as root, so chmod cannot refuse)."""
    root, ids, every = store
    shutil.rmtree(root / "tmp", ignore_errors=True)
    (root / ".lock").unlink(missing_ok=True)
    data = str(root.parent)

    def under(path) -> bool:
        try:
            return os.path.abspath(os.fsdecode(path)).startswith(data)
        except TypeError:
            return False

    def refuse(path) -> None:
        raise OSError(errno.EROFS, "Read-only file system", os.fsdecode(path))

    real_open, real_io_open, real_mkdir = os.open, io.open, os.mkdir
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def guarded_os_open(path, flags, *a, **k):
        if flags & writes and under(path):
            refuse(path)
        return real_os_open(path, flags, *a, **k)

    real_os_open = real_open

    def guarded_io_open(file, mode="r", *a, **k):
        if isinstance(file, (str, bytes, os.PathLike)) and set(mode) & set("wax+") and under(file):
            refuse(file)
        return real_io_open(file, mode, *a, **k)

    def guarded(fn):
        def wrapper(src, *a, **k):
            if under(src):
                refuse(src)
            return fn(src, *a, **k)
        return wrapper

    monkeypatch.setattr(os, "open", guarded_os_open)
    monkeypatch.setattr(io, "open", guarded_io_open)
    monkeypatch.setattr("builtins.open", guarded_io_open)
    monkeypatch.setattr(os, "mkdir", lambda p, *a, **k: refuse(p) if under(p) and not os.path.isdir(p) else real_mkdir(p, *a, **k))
    for name in ("rename", "replace", "unlink", "rmdir", "remove"):
        monkeypatch.setattr(os, name, guarded(getattr(os, name)))
    before = _tree(root)
    yield root, ids, every
    assert _tree(root) == before  # nothing under the data directory was created, changed or removed


def test_read_only_store_readers_work(read_only, tmp_path: Path, capsys) -> None:
    root, ids, every = read_only
    clear_cache()
    assert set(list_runs()["run_id"]) == every
    assert run_sql("SELECT count(*) AS n FROM perplexity WHERE run_id = '%s'" % ids["A"])["n"].tolist() == [2]
    assert cli(["runs", "--format", "csv"]) == 0 and len(capsys.readouterr().out.strip().splitlines()) == len(every) + 1
    assert cli(["attempts", ids["C"]]) == 0
    assert cli(["export", "--format", "parquet", "--out", str(tmp_path / "export")]) == 0
    assert len(pd.read_parquet(tmp_path / "export" / "runs.parquet")) == len(every)
    assert cli(["verify"]) == 0
    at = _grid_page()
    assert not at.container(key="grid_table").dataframe[0].value.empty
    for page in ("runs", "jobs", "compare"):  # every reader page, the jobs list too (it would refresh the queue)
        at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])


@pytest.mark.parametrize("argv", [["compact", "--full"], ["notes", "A", "a note"], ["tag", "A", "keep"],
                                  ["verify", "--repair"], ["import", "notes", str(NOTES)]])
def test_read_only_store_writers_refuse_in_one_line(read_only, argv, capsys) -> None:
    root, ids, every = read_only
    argv = [ids["A"] if a == "A" else a for a in argv]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: the results store ") and "is read-only here" in err, err


def test_read_only_mount_real(store, tmp_path: Path) -> None:
    """The same on a real read-only bind mount (needs a private mount namespace: root, or a
    non-root user with chmod -R a-w instead)."""
    root, ids, every = store
    shutil.rmtree(root / "tmp", ignore_errors=True)
    data = root.parent
    py = f"{sys.executable} -m pruning"
    if os.geteuid() == 0:
        if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
            pytest.skip("no mount namespace here")
        script = (f"mount --bind -o ro {data} {data} && {py} runs --format csv | wc -l; "
                  f"{py} query 'SELECT count(*) FROM runs' --format csv; {py} compact --full; echo rc=$?")
        cmd = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    else:
        subprocess.run(["chmod", "-R", "a-w", str(data)], check=True)
        script = (f"{py} runs --format csv | wc -l; {py} query 'SELECT count(*) FROM runs' --format csv; "
                  f"{py} compact --full; echo rc=$?")
        cmd = ["sh", "-c", script]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300,
                             env={**os.environ, "PRUNING_LAB_DATA": str(data)})
    finally:
        if os.geteuid() != 0:
            subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    out = res.stdout.split()
    assert out[0] == str(len(every) + 1) and out[-2] == str(len(every)) and out[-1] == "rc=2", (res.stdout, res.stderr)
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "read-only" in errors[0] and "Traceback" not in res.stderr, res.stderr


def test_verify_leaves_the_readers_quarantine_warnings_on(store, caplog) -> None:
    """`verify` quiets the readers' own quarantine warnings while it reports, and only then: run in
    the same process (the app, the tests), a later reader still warns about a bad file."""
    import logging

    health = logging.getLogger("pruning.store.health")
    before = health.level
    assert cli(["verify"]) == 0
    assert health.level == before and health.getEffectiveLevel() <= logging.WARNING
