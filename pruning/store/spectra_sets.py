"""Stored spectra sets: a model's spectra, published once and referenced by every run that uses them.

One set is the spectra of one model (its fingerprint, ``pruning.model.load.model_fingerprint``) from one
source (``weight``: ESD of W^T W; ``hessian``: ESD of H = 2 X^T X / N on one calibration batch), in
one eigen-solver precision, by one version of the spectra code (``pruning.run.spectra_cache.SPECTRA_VERSION``).
It is an ordinary immutable bundle ``spectra-<key>`` (published through
:func:`pruning.store.publish.publish_bundle`: staging directory + rename, catalog, ``verify``,
quarantine) holding two tables:

* ``spectra_sets`` — the metric rows (``pruning.spectral.summary.COLUMNS``) plus the set's identity
  (``spectra_key, fingerprint, spectra_version, calibration``);
* ``eigenvalues`` — every eigenvalue of every matrix, float64, long (``spectra_key, name, source,
  eigenvalue``): the ESD plots need the whole spectrum (its histogram and its tail); SmolLM2-135M's
  weight set is 97,920 values (210 matrices of 192..576), its Hessian set 149,760 (the shared q/k/v
  and gate/up spectra repeated per matrix), 0.8 and 1.2 MB before Parquet's compression.

A run's own ``spectra`` rows name their set in ``spectra_key``; readers: :mod:`pruning.store.queries_spectra`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pruning.config.precision import check_eig_dtype
from pruning.store.errors import StoreError
from pruning.store.publish import PublishResult, publish_bundle

log = logging.getLogger(__name__)

SPECTRA_SOURCES: tuple[str, ...] = ("weight", "hessian")
BUNDLE_PREFIX = "spectra-"


@dataclass(frozen=True)
class SpectraSetKey:
    """What makes two spectra the same: model fingerprint, source, eigen-solver precision, spectra
    code version and (Hessians) a digest of the calibration batch."""

    fingerprint: str
    source: str
    eig_dtype: str
    spectra_version: str
    calibration: str = ""  # 12 hex digits of the calibration batch's digest; "" for weights

    def __post_init__(self) -> None:
        if not self.fingerprint or "-" in self.fingerprint:
            raise ValueError(f"fingerprint: {self.fingerprint!r} is invalid; expected the hex digest of a model")
        if self.source not in SPECTRA_SOURCES:
            raise ValueError(f"source: {self.source!r} is invalid; accepted: {', '.join(SPECTRA_SOURCES)}")
        check_eig_dtype(self.eig_dtype)
        if not self.spectra_version or "-" in self.spectra_version or "-" in self.calibration:
            raise ValueError(f"spectra_version / calibration: {self.spectra_version!r} / {self.calibration!r} "
                             "are invalid; neither may be empty (the version) or contain '-'")
        if self.source == "hessian" and not self.calibration:
            raise ValueError("calibration: a Hessian spectra set needs the digest of its calibration batch")

    @classmethod
    def parse(cls, name: str) -> SpectraSetKey:
        """The key whose :attr:`name` is ``name``; raises ValueError naming the bad name."""
        parts = name.removeprefix(BUNDLE_PREFIX).split("-")
        if len(parts) not in (4, 5) or not parts[3].startswith("v"):
            raise ValueError(f"spectra set name: {name!r} is invalid; expected "
                             "<fingerprint>-<source>-<dtype>-v<version>[-<calibration>]")
        return cls(parts[0], parts[1], parts[2], parts[3][1:], parts[4] if len(parts) == 5 else "")

    @property
    def name(self) -> str:
        """``<fingerprint>-<source>-<dtype>-v<version>[-<calibration>]`` (also the local cache's file stem)."""
        tail = f"-{self.calibration}" if self.calibration else ""
        return f"{self.fingerprint}-{self.source}-{self.eig_dtype}-v{self.spectra_version}{tail}"

    @property
    def bundle(self) -> str:
        """The store bundle (and ``run_id``) of the set: ``spectra-<name>``."""
        return BUNDLE_PREFIX + self.name


def spectra_set_tables(key: SpectraSetKey, table: pd.DataFrame, eigenvalues: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The two tables of a set: ``table`` (metric rows, one source and precision, the key's) and
    ``eigenvalues`` (columns ``name, source, eigenvalue``) with the key's identity columns added.
    Raises StoreError naming the first row that belongs to another source or precision."""
    for column, expected in (("source", key.source), ("eig_dtype", key.eig_dtype)):
        other = table[table[column].astype(str) != expected]
        if len(other):
            raise StoreError(f"spectra set {key.name}: row {other['name'].iloc[0]!r} has {column} "
                             f"{other[column].iloc[0]!r}, the set's is {expected!r}")
    identity = {k: v for k, v in asdict(key).items() if k != "eig_dtype" and k != "source"}
    metrics = table.drop(columns=[c for c in ("run_id", "bundle") if c in table.columns])
    metrics = metrics.assign(spectra_key=key.name, run_id=key.bundle, **identity)
    eigs = eigenvalues[["name", "source", "eigenvalue"]].assign(spectra_key=key.name, run_id=key.bundle)
    return {"spectra_sets": metrics, "eigenvalues": eigs}


def publish_spectra_set(key: SpectraSetKey, table: pd.DataFrame, eigenvalues: pd.DataFrame,
                        root: Path | str | None = None) -> PublishResult:
    """Publish one spectra set as the immutable bundle ``spectra-<key>``; a set already published
    under the same key is kept and nothing is written (``skipped``): sets are stored once."""
    tables = spectra_set_tables(key, table, eigenvalues)
    info = {"kind": "spectra", **asdict(key)}
    result = publish_bundle(key.bundle, tables, info=info, root=root, content_hash=key.name, if_exists="skip_same")
    if not result.skipped:
        log.info("stored spectra set %s (%d matrices, %d eigenvalues)", key.name, len(table), len(eigenvalues))
    return result
