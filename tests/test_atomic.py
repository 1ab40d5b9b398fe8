"""Tests of the atomic-write helper: the target is replaced whole or not at all, and no temporary
file is left behind either way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pruning.atomic import temp_path, write_atomic, write_json_atomic, write_parquet_atomic, write_text_atomic


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_write_text_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    assert write_text_atomic(target, "new ü") == target
    assert target.read_text(encoding="utf-8") == "new ü"
    assert _siblings(target) == ["a.txt"]


def test_failure_mid_write_keeps_old_file_and_removes_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half-writ")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(target, half_then_fail)
    assert target.read_text() == "old"
    assert _siblings(target) == ["a.txt"]


def test_failure_before_file_exists_propagates(tmp_path: Path) -> None:
    target = tmp_path / "new.txt"

    def fail(tmp: Path) -> None:
        raise ValueError("bad frame")

    with pytest.raises(ValueError, match="bad frame"):
        write_atomic(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_parquet_failure_keeps_old_table(tmp_path: Path) -> None:
    target = tmp_path / "t.parquet"
    write_parquet_atomic(pd.DataFrame({"x": [1, 2]}), target)
    bad = pd.DataFrame({"x": [object()]})  # pyarrow cannot write a bare object
    with pytest.raises(Exception):
        write_parquet_atomic(bad, target)
    assert pd.read_parquet(target)["x"].tolist() == [1, 2]
    assert _siblings(target) == ["t.parquet"]


def test_json_is_sorted_stable_and_durable(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json_atomic(target, {"b": 1, "a": [1.5]})
    text = target.read_text()
    assert text.endswith("\n")
    assert text.index('"a"') < text.index('"b"')
    assert json.loads(text) == {"a": [1.5], "b": 1}


def test_temp_path_is_hidden_sibling_and_unique(tmp_path: Path) -> None:
    target = tmp_path / "x.parquet"
    first, second = temp_path(target), temp_path(target)
    assert first.parent == target.parent and first.name.startswith(".x.parquet.")
    assert first.suffix == ".tmp"
    assert first != second
