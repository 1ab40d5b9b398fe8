"""Shared fixtures: tiny random LLaMA models, an isolated data dir, the offline model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from pruning.model.synthetic import random_llama


@pytest.fixture()
def tiny_llama() -> torch.nn.Module:
    """2 blocks, hidden 64, MLP 128, 4 heads (2 KV heads: GQA), vocab 256; seed 0."""
    return random_llama(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=256, seed=0)


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty results store directory used via PRUNING_LAB_DATA."""
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("PRUNING_LAB_DATA", str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LLaMA (2 blocks, hidden 64) with the offline tokenizer as a local model directory
    (``pruning.model.synthetic.save_tiny_model_dir``): what end-to-end runs of a test load."""
    from pruning.model.synthetic import save_tiny_model_dir

    return save_tiny_model_dir(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def offline_model():
    """The real offline SmolLM2-135M (prepared by `python -m pruning fetch`)."""
    from pruning.model.load import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
