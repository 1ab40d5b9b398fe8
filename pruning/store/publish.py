"""Publishing immutable run artifacts: write to ``tmp/``, then one atomic ``rename`` into ``runs/``.

A *bundle* is one published directory: a run (bundle id == run id) or an imported reference file
(many reference result sets, each with its own run id). A reader sees either the whole bundle or
nothing; a publisher killed mid-write leaves only a staging directory, removed by the next
publisher. Publishing the same bundle id again creates a new attempt (``<id>~2``) that supersedes
the old one in queries; the old directory is kept untouched.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import secrets
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

import pandas as pd
import pyarrow.parquet as pq

from pruning.config.run_config import RunConfig
from pruning.paths import REPO_ROOT
from pruning.config.presets import get_preset, PRESETS
from pruning.store.checksums import file_digest
from pruning.store.compaction import maybe_compact
from pruning.store.errors import StoreError
from pruning.store.layout import (
    BUNDLE_PARQUET, check_bundle_id, clean_stale_tmp, dirname_for, latest_attempts, writable_store,
)
from pruning.store.lock import writer_lock
from pruning.store.schema import RUN_COLUMNS, RUN_STATUSES, SCHEMA_VERSION, TABLES, to_arrow

log = logging.getLogger(__name__)

_ENV_PACKAGES = ("torch", "transformers", "accelerate", "numpy", "pandas", "pyarrow", "duckdb", "lm_eval", "pydantic")


@dataclass(frozen=True)
class PublishResult:
    """Where a bundle was published; ``skipped`` when an identical bundle already existed."""

    bundle: str
    dirname: str
    path: Path
    run_ids: tuple[str, ...]
    attempt: int
    skipped: bool = False


@functools.lru_cache(maxsize=1)
def _static_environment() -> dict[str, Any]:
    versions = {}
    for name in _ENV_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "code_revision": git_revision()}


def source_digest(package_dir: Path = Path(__file__).resolve().parents[1]) -> str:
    """SHA-256 (first 16 hex digits) over the relative path and bytes of every ``*.py`` file of the
    ``pruning`` package: identifies the code that made a run even without git (a copied tree, an
    installed wheel) and tells apart two dirty trees on the same commit."""
    h = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        h.update(path.relative_to(package_dir).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def git_revision(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """``{"commit": sha, "dirty": bool, "source_sha256": digest}`` of the code that runs; commit and
    dirty are None outside a usable git checkout (no git, not a repository, a repository owned by
    another user), the source digest is always there (:func:`source_digest`)."""
    out: dict[str, Any] = {"commit": None, "dirty": None, "source_sha256": source_digest()}
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            log.warning("no git revision recorded (the source digest identifies the code): %s", sha.stderr.strip())
            return out
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
        out.update(commit=sha.stdout.strip(), dirty=bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("no git revision recorded (the source digest identifies the code): %s", exc)
    return out


def environment() -> dict[str, Any]:
    """Package versions, Python, platform, device and git revision of this process."""
    env = dict(_static_environment())
    device: dict[str, Any] = {"cpu_count": os.cpu_count()}
    torch = sys.modules.get("torch")  # never import torch just for this (slow)
    if torch is not None:
        try:
            if torch.cuda.is_available():
                device["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                device["cuda"] = torch.version.cuda
        except RuntimeError as exc:  # broken driver: record, do not fail the publish
            device["gpu_error"] = str(exc)
    env["device"] = device
    try:  # which offline text the run read (the manifest's digests; empty when none are prepared)
        from pruning.text.corpora import corpus_fingerprints

        env["corpora"] = corpus_fingerprints()
    except Exception as exc:  # noqa: BLE001 - provenance must never fail a publish
        env["corpora"] = {"error": str(exc)}
    return env


def preset_of(config: RunConfig) -> str | None:
    """Canonical preset name of a config: its explicit preset, or the preset whose score groups and
    granularity it matches (None for uniform allocation or a combination that is no preset)."""
    alloc = config.allocation
    if alloc.preset:
        return get_preset(alloc.preset).name
    if alloc.strategy == "uniform":
        return None
    for preset in PRESETS.values():
        if preset.score_groups == tuple(alloc.score_groups) and preset.granularity == alloc.granularity:
            return preset.name
    return None


def metric_label(config: RunConfig) -> str | None:
    """``runs.metric`` of a run: the metric of a ``linear`` allocation, ``"<metric>+<metric_mix>"``
    (e.g. ``hessian_alpha+alpha_peak``) when it mixes two, None for the other strategies."""
    alloc = config.allocation
    return "+".join(alloc.metrics) if alloc.strategy == "linear" else None


def run_row(config: RunConfig, *, status: str, error: str | None, timings: Mapping[str, float] | None,
            env: Mapping[str, Any] | None, created_at: str | None) -> dict[str, Any]:
    """The ``runs`` row of one engine run."""
    alloc, prune = config.allocation, config.pruning
    return {
        "bundle": config.run_id, "run_id": config.run_id, "kind": "run", "model": config.model.name,
        "method": prune.method, "strategy": alloc.strategy, "preset": preset_of(config),
        "preset_raw": alloc.preset, "metric": metric_label(config),
        "epsilon": alloc.epsilon if alloc.strategy == "linear" else None, "sparsity": prune.sparsity,
        "sparsity_assumed": False, "nm": prune.nm, "status": status, "error": error, "label": config.label,
        "config_tags": list(config.tags), "is_baseline": False, "created_at": created_at,
        "source_file": None, "source_line": None, "note": None,
        "config_json": json.dumps(config.to_dict(), sort_keys=True),
        "env_json": json.dumps(dict(env or {}), sort_keys=True, default=str),
        "timings_json": json.dumps({k: float(v) for k, v in (timings or {}).items()}, sort_keys=True),
        "schema_version": SCHEMA_VERSION,
    }


def publish_run(config: RunConfig | Mapping[str, Any], *, status: Literal["succeeded", "failed"] = "succeeded",
                tables: Mapping[str, pd.DataFrame] | None = None, timings: Mapping[str, float] | None = None,
                error: str | None = None, env: Mapping[str, Any] | None = None, created_at: str | None = None,
                root: Path | str | None = None) -> PublishResult:
    """Publish one engine run (succeeded or failed) as an immutable bundle named by its run id.

    ``tables``: any of spectra, allocation, perplexity, zeroshot, attention, metrics (tidy
    DataFrames, shapes in docs/CONTRACTS.md; ``run_id`` is added). A failed run needs ``error``.
    ``env`` is merged over :func:`environment`; ``created_at`` defaults to now (ISO, UTC).
    Publishing a run id again creates a new attempt that supersedes the previous one.
    """
    if not isinstance(config, RunConfig):
        config = RunConfig.from_dict(dict(config))
    if status not in RUN_STATUSES:
        raise StoreError(f"run status {status!r} cannot be published; accepted: {', '.join(RUN_STATUSES)}")
    if status == "failed" and not (error and error.strip()):
        raise StoreError(f"run {config.run_id}: a failed run needs its error text")
    created_at = created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    full_env = {**environment(), **dict(env or {})}
    row = run_row(config, status=status, error=error, timings=timings, env=full_env, created_at=created_at)
    out: dict[str, pd.DataFrame] = {"runs": pd.DataFrame([row])}
    for name, df in (tables or {}).items():
        if df is None:
            continue
        df = df.copy()
        if "run_id" in df.columns and not (df["run_id"].isna() | (df["run_id"] == config.run_id)).all():
            raise StoreError(f"table {name!r} holds rows of other runs: {sorted(set(df['run_id']) - {config.run_id})[:3]}")
        df["run_id"] = config.run_id
        out[name] = df
    info = {"kind": "run", "run_id": config.run_id, "status": status, "created_at": created_at}
    return publish_bundle(config.run_id, out, info=info, root=root)


def publish_outcome(outcome: Any, started_at: float | None = None, root: Path | str | None = None) -> PublishResult:
    """Publish a ``pruning.run.pipeline.RunOutcome`` (run_id, config, status, error, tables, timings,
    model_fingerprint, tokenizer_fingerprint, placement, peak_gpu_gib: recorded in the run's ``env``)."""
    tables = dict(outcome.tables)
    created = (_dt.datetime.fromtimestamp(started_at, _dt.timezone.utc).isoformat(timespec="seconds")
               if started_at is not None else None)
    env = {"model_fingerprint": getattr(outcome, "model_fingerprint", None),
           "tokenizer_fingerprint": getattr(outcome, "tokenizer_fingerprint", None),
           "placement": dict(getattr(outcome, "placement", {}) or {}),
           "peak_gpu_gib": getattr(outcome, "peak_gpu_gib", None)}
    return publish_run(outcome.config, status=outcome.status, tables=tables, timings=outcome.timings,
                       error=outcome.error, env=env, created_at=created, root=root)


def publish_bundle(bundle: str, tables: Mapping[str, pd.DataFrame], *, info: Mapping[str, Any] | None = None,
                   root: Path | str | None = None, content_hash: str | None = None,
                   if_exists: Literal["new_attempt", "skip_same", "error"] = "new_attempt") -> PublishResult:
    """Atomically publish one bundle: ``tables`` maps ``runs`` and/or TABLES to DataFrames.

    Every table is validated and converted before anything is written; the files are written to a
    staging directory and renamed into ``runs/`` under the writer lock. ``if_exists``:
    ``new_attempt`` publishes a superseding attempt, ``skip_same`` returns the existing bundle
    when its ``content_hash`` equals this one (else a new attempt), ``error`` raises StoreError.
    """
    check_bundle_id(bundle)
    unknown = [t for t in tables if t != "runs" and t not in TABLES]
    if unknown:
        raise StoreError(f"unknown table(s) {unknown}; accepted: runs, {', '.join(TABLES)}")
    arrow = {}
    for name, df in tables.items():
        df = df.copy()
        df["bundle"] = bundle
        if name == "runs":
            for col in RUN_COLUMNS:
                if col not in df.columns:
                    df[col] = None
            df["schema_version"] = SCHEMA_VERSION
        arrow[name] = to_arrow(name, df)
    run_ids = tuple(arrow["runs"].column("run_id").to_pylist()) if "runs" in arrow else ()
    if len(set(run_ids)) != len(run_ids):
        raise StoreError(f"bundle {bundle!r} lists a run id twice: {sorted({r for r in run_ids if run_ids.count(r) > 1})}")

    root = writable_store(root, f"publish {bundle}")
    clean_stale_tmp(root)
    staging = root / "tmp" / f"{bundle}.{os.getpid()}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        for name, table in sorted(arrow.items()):
            pq.write_table(table, staging / f"{name}.parquet", **BUNDLE_PARQUET)
        manifest = {"bundle": bundle, "schema_version": SCHEMA_VERSION, "content_hash": content_hash,
                    "tables": {k: v.num_rows for k, v in sorted(arrow.items())}, "info": dict(info or {}),
                    "files": {f"{k}.parquet": file_digest(staging / f"{k}.parquet") for k in sorted(arrow)}}
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")
        with writer_lock(root):
            existing = latest_attempts(root).get(bundle)
            attempt = 1
            if existing is not None:
                if if_exists == "error":
                    raise StoreError(f"bundle {bundle!r} is already published ({existing[0]})")
                if if_exists == "skip_same" and content_hash is not None:
                    try:
                        old = json.loads((root / "runs" / existing[0] / "manifest.json").read_text())
                    except (OSError, ValueError) as exc:  # unreadable: publish a new attempt over it
                        log.warning("manifest of %s is unreadable (%s); publishing a new attempt", existing[0], exc)
                        old = {}
                    if isinstance(old, dict) and old.get("content_hash") == content_hash:
                        shutil.rmtree(staging, ignore_errors=True)
                        log.info("bundle %s already published with the same content (%s); skipped", bundle, existing[0])
                        return PublishResult(bundle, existing[0], root / "runs" / existing[0], run_ids, existing[1], True)
                attempt = existing[1] + 1
            dirname = dirname_for(bundle, attempt)
            os.rename(staging, root / "runs" / dirname)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("published %s (%d run(s), tables %s)", dirname, len(run_ids), ", ".join(sorted(arrow)))
    maybe_compact(root)
    return PublishResult(bundle, dirname, root / "runs" / dirname, run_ids, attempt)
