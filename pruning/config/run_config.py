"""Typed, validated run configuration shared by the CLI, the app's form, the job queue and the
stored run.

A :class:`RunConfig` has six sections (model, calibration, allocation, pruning, evaluation,
plus run-level ``seed``/``label``/``tags``); the sections are defined in
:mod:`pruning.config.sections` and :mod:`pruning.config.allocation`. Every invalid value raises
:class:`pruning.errors.ConfigError` naming the field, the value and what is accepted. The run
id is a hash of the canonical JSON of everything that affects results (``label`` and ``tags``
are annotations and excluded), so the same config always maps to the same run id.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from pruning.config.allocation import EVOPRESS_DEFAULTS, STRATEGIES, AllocationConfig
from pruning.config.sections import (
    DTYPES,
    MAX_BATCH,
    MAX_COUNT,
    MAX_SEED,
    MAX_SEQLEN,
    MAX_TEXT,
    CalibrationConfig,
    ConfigSection,
    EvaluationConfig,
    ModelConfig,
    PruningConfig,
)
from pruning.errors import ConfigError
from pruning.config.precision import DEFAULT_EIG_DTYPE
from pruning.config.presets import GRANULARITIES

CONFIG_VERSION = 1


# (section, field) -> default of fields added after the first published runs (see canonical_json)
# allocation.eig_dtype: runs published before it existed computed spectra in float32 on GPUs and
# float64 on CPUs; the same config now means float64 everywhere, and re-running such a run makes a
# new attempt of the same run id (the old one stays as history, its rows say eig_dtype=float32).
HASHED_WHEN_CHANGED: dict[tuple[str, str], Any] = {
    ("calibration", "batch_size"): 1,
    ("allocation", "eig_dtype"): DEFAULT_EIG_DTYPE,
    ("allocation", "dlp_alpha"): 0.15,
    ("allocation", "dlp_statistic"): "median",
    ("allocation", "depth_beta"): None,
    ("allocation", "metric_mix"): None,
    ("allocation", "probe_block"): None,
    ("allocation", "kl_spread"): 0.1,
    **{("allocation", name): default for name, default in EVOPRESS_DEFAULTS.items()},
}


class RunConfig(ConfigSection):
    """One run: model + calibration + allocation + pruning + evaluation."""

    version: int = Field(CONFIG_VERSION, ge=1, le=CONFIG_VERSION)
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    allocation: AllocationConfig = AllocationConfig()
    pruning: PruningConfig = PruningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    # the run's torch seed (torch.manual_seed before the run; lm-eval's few-shot sampling). Not the calibration
    # sample's: that is calibration.seed, which the sweep's `seeds`, the CLI's `--seed` and the study's seeds set.
    # Kept apart because canonical_json hashes this field as it is ("seed": 0 in every stored run id) while the
    # study's runs differ in calibration.seed: merging the two would change their run ids (issue 30, 2026-12-05).
    seed: int = Field(0, ge=0, le=MAX_SEED)
    label: str | None = Field(None, max_length=MAX_TEXT)
    tags: tuple[str, ...] = Field((), max_length=64)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        """Validate a nested dict; raises ConfigError naming field, value and accepted values."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error_from(exc) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "RunConfig":
        """Load and validate a YAML file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        data = load_yaml_file(path, "config file") or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config file {str(path)!r} must hold a mapping, got {type(data).__name__}")
        return cls.from_dict(data)

    def with_overrides(self, overrides: dict[str, Any]) -> "RunConfig":
        """A new validated config with dotted-key overrides, e.g. {'pruning.sparsity': 0.7}."""
        data = self.to_dict()
        for dotted, value in overrides.items():
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                if not isinstance(node.get(key), dict):
                    raise ConfigError(f"{dotted}: unknown field; sections: model, calibration, allocation, pruning, evaluation")
                node = node[key]
            node[leaf] = value
        if "allocation.preset" in overrides:
            # a new preset replaces groups/granularity derived from the old one
            alloc = data["allocation"]
            if not any(k in overrides for k in ("allocation.score_groups", "allocation.granularity")):
                alloc.pop("score_groups", None)
                alloc.pop("granularity", None)
        return RunConfig.from_dict(data)

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples as lists)."""
        return json.loads(self.model_dump_json())

    def to_yaml(self) -> str:
        """YAML text that :meth:`from_yaml` reads back to an equal config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def canonical_json(self) -> str:
        """Sorted-key JSON of every field that affects results (label and tags excluded). Fields
        added after runs were first published (:data:`HASHED_WHEN_CHANGED`) count only when they
        differ from their default, so the run ids of existing configs stay what they were."""
        data = self.to_dict()
        data.pop("label", None)
        data.pop("tags", None)
        if data.get("model", {}).get("offload") == "auto":
            # where blocks live does not change a result (tests/test_prefetch_cuda.py: offload gives
            # the model-on-GPU tensors bit for bit), so "auto" hashes as the old default, false
            data["model"]["offload"] = False
        for (section, name), default in HASHED_WHEN_CHANGED.items():
            if data.get(section, {}).get(name, default) == default:
                data.get(section, {}).pop(name, None)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        """Stable id: method prefix + 12 hex digits of SHA-256 of :meth:`canonical_json`."""
        digest = hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]
        return f"{self.pruning.method}-{digest}"


def yaml_error_line(exc: yaml.YAMLError) -> str:
    """One line from a PyYAML error: the problem and where (line, column; 1-based)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}"


def load_yaml_file(path: str | Path, what: str) -> Any:
    """Parse a UTF-8 YAML file; any unreadable, non-UTF-8 or malformed file raises ConfigError
    naming ``what`` (e.g. "config file"), the path and the problem, in one line."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}); accepted: a UTF-8 YAML "
                          "file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    return parse_yaml_text(text, f"{what} {str(path)!r}")


def parse_yaml_text(text: str, what: str) -> Any:
    """``yaml.safe_load`` whose errors are one-line ConfigErrors naming ``what``."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {yaml_error_line(exc)}") from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a timestamp out of range
        raise ConfigError(f"{what} is not valid YAML: {exc}") from None


def config_error_from(exc: ValidationError) -> ConfigError:
    """Turn a pydantic error into one ConfigError line per bad field: 'field: value -> why'."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        value = err.get("input")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif isinstance(value, float) and not math.isfinite(value):
            msg = f"not a finite number ({msg})"
        value_txt = repr(value) if not isinstance(value, dict) else "{...}"
        if len(value_txt) > 120:
            value_txt = value_txt[:100] + "..." + value_txt[-10:]
        lines.append(f"{field}: {value_txt} is invalid: {msg}")
    return ConfigError("; ".join(lines))

__all__ = [
    "AllocationConfig", "CalibrationConfig", "ConfigError", "EvaluationConfig", "ModelConfig", "PruningConfig",
    "RunConfig", "STRATEGIES", "DTYPES", "GRANULARITIES", "MAX_BATCH", "MAX_COUNT", "MAX_SEED", "MAX_SEQLEN",
    "config_error_from", "load_yaml_file", "parse_yaml_text", "yaml_error_line",
]
