"""Typed, validated run configuration shared by the CLI, the app's form, the job queue and the
stored run.

A :class:`RunConfig` has six sections (model, calibration, allocation, pruning, evaluation,
plus run-level ``seed``/``label``/``tags``). Every invalid value raises
:class:`pruning.errors.ConfigError` naming the field, the value and what is accepted. The run
id is a hash of the canonical JSON of everything that affects results (``label`` and ``tags``
are annotations and excluded), so the same config always maps to the same run id.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from pruning.errors import ConfigError
from pruning.methods.nm_pattern import format_nm, parse_nm
from pruning.methods.registry import get_method, method_names, prunes
from pruning.presets import GRANULARITIES, MATRIX_TYPES, get_preset, parse_score_groups

STRATEGIES: tuple[str, ...] = ("uniform", "linear", "owl", "dlp", "depth")
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "float16")
CONFIG_VERSION = 1
#: Bounds shared by several fields (docs/jobs.md "Validation"): seeds are 32-bit like numpy's,
#: sequence lengths stop at 128k tokens, counts at sizes no run here comes near.
MAX_SEED = 2**32 - 1
MAX_SEQLEN = 131_072
MAX_BATCH = 4096
MAX_COUNT = 10_000_000
MAX_TEXT = 1000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


class ModelConfig(_Section):
    """Which model to load: alias, Hugging Face id, local directory or ``.gguf`` file."""

    name: str = Field("smollm2-135m", max_length=4096)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"
    # "auto": measured (pruning.placement): the whole model on the device when it fits, else one block
    # at a time; true: always one block at a time with the model on the CPU; false: always on the device.
    offload: bool | Literal["auto"] = Field("auto", description="auto | true | false: model on `device` or one block at a time")
    revision: str | None = Field(None, max_length=256)

    @field_validator("name")
    @classmethod
    def _name_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty model reference")
        return v.strip()

    @field_validator("device")
    @classmethod
    def _device_form(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?|mps|auto", v):
            raise ValueError("accepted: 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")
        return v


class CalibrationConfig(_Section):
    """Calibration data: ``nsamples`` windows of ``seqlen`` tokens drawn with ``seed``."""

    dataset: str = Field("wiki", min_length=1, max_length=4096)
    nsamples: int = Field(128, ge=1, le=100_000)
    seqlen: int = Field(2048, ge=8, le=MAX_SEQLEN)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # samples per block forward in the block-sequential passes. 1 is the reference codes' loop
    # (one sample at a time); larger batches cut the per-call overhead that dominates small models
    # on a GPU, at the cost of rounding-level differences in the statistics (other GEMM shapes).
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)


class AllocationConfig(_Section):
    """Layer-wise sparsity allocation (see pruning.allocation and DESIGN.md 'Allocation').

    ``preset`` (a notes column header such as ``"QKVout + split"``) sets ``score_groups`` and
    ``granularity``; giving both a preset and different explicit values is an error.
    """

    strategy: Literal["uniform", "linear", "owl", "dlp", "depth"] = "uniform"
    metric: str = Field("alpha_peak", max_length=64)
    higher_prunes_more: bool = True
    epsilon: float = Field(0.2, ge=0.0, lt=1.0)
    preset: str | None = Field(None, max_length=256)
    score_groups: tuple[str, ...] = MATRIX_TYPES
    granularity: Literal["block", "split", "matrix"] = "block"
    min_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    max_sparsity: float = Field(0.99, gt=0.0, le=1.0)
    owl_threshold_m: float = Field(5.0, gt=0.0, le=1000.0)
    owl_lambda: float = Field(0.08, ge=0.0, lt=1.0)
    # DLP (Chen et al., ICML 2025): sparsity spread 2 alpha around S; alpha 0.15 in the reference
    # code and every published table. The per-block unimportance is the median (the paper) or the
    # mean (the reference's unstructured path) of the block's Wanda scores (pruning.allocation.dlp).
    dlp_alpha: float = 0.15
    dlp_statistic: Literal["median", "mean"] = "median"
    # ATP (Huang et al., ICML 2025): common difference per block of the sparsity progression; no
    # default in the paper (searched from 0.002 in steps of 0.002), so strategy 'depth' needs it.
    depth_beta: float | None = None
    # eigen-solver precision of the weight and Hessian spectra the allocation reads. float64 is
    # device-independent (agrees with a float64 SVD of W within 1e-3 in every metric); float32
    # loses the small eigenvalues that decide alpha_peak (pruning.spectral.esd) and is an option only.
    eig_dtype: Literal["float64", "float32"] = "float64"

    @field_validator("metric")
    @classmethod
    def _metric_name(cls, v: str) -> str:
        if not re.fullmatch(r"(hessian_)?[a-z][a-z0-9_]*", v):
            raise ValueError("must be a spectral-table column such as 'alpha_peak', 'alpha', 'stable_rank', 'hessian_alpha'")
        return v

    @field_validator("dlp_alpha", "depth_beta")
    @classmethod
    def _spread_range(cls, v: float | None) -> float | None:
        if v is not None and not (math.isfinite(v) and 0.0 <= v < 1.0):
            raise ValueError("accepted range [0, 1)")
        return v

    @field_validator("score_groups", mode="before")
    @classmethod
    def _groups(cls, v: Any) -> tuple[str, ...]:
        try:
            return parse_score_groups(v)
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @field_validator("preset")
    @classmethod
    def _preset_known(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return get_preset(v).name
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None

    @model_validator(mode="after")
    def _apply_preset(self) -> "AllocationConfig":
        if self.min_sparsity > self.max_sparsity:
            raise ValueError(f"min_sparsity {self.min_sparsity} exceeds max_sparsity {self.max_sparsity}")
        if self.strategy == "depth" and self.depth_beta is None:
            raise ValueError("strategy 'depth' needs depth_beta (ATP's common difference per block, "
                             "accepted range [0, 1); the paper searches 0.002, 0.004, ...)")
        if self.preset is not None:
            preset = get_preset(self.preset)
            explicit = self.model_fields_set
            if "score_groups" in explicit and tuple(self.score_groups) != preset.score_groups:
                raise ValueError(
                    f"preset {preset.name!r} fixes score_groups={','.join(preset.score_groups)}, "
                    f"but score_groups={','.join(self.score_groups)} was also given"
                )
            if "granularity" in explicit and self.granularity != preset.granularity:
                raise ValueError(
                    f"preset {preset.name!r} fixes granularity={preset.granularity!r}, "
                    f"but granularity={self.granularity!r} was also given"
                )
            object.__setattr__(self, "score_groups", preset.score_groups)
            object.__setattr__(self, "granularity", preset.granularity)
        return self


class PruningConfig(_Section):
    """Pruning method and target sparsity; ``nm`` like ``"2:4"`` selects semi-structured N:M.
    ``method`` is any name of the method registry (:mod:`pruning.methods.registry`)."""

    method: str = Field("wanda", max_length=64)
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    nm: str | None = None
    blocksize: int = Field(128, ge=1, le=65_536)
    percdamp: float = Field(0.01, gt=0.0, lt=1.0)

    @field_validator("method")
    @classmethod
    def _method_registered(cls, v: str) -> str:
        if v not in method_names():
            raise ValueError(f"not a registered pruning method; accepted: {', '.join(map(repr, method_names()))}")
        return v

    @field_validator("nm")
    @classmethod
    def _nm_form(cls, v: str | None, info: ValidationInfo) -> str | None:
        nm = format_nm(parse_nm(v))
        method = info.data.get("method")  # validated first (declared first); absent when invalid
        if nm is not None and method is not None and prunes(method) and not get_method(method).supports_nm:
            raise ValueError(f"method {method!r} has no N:M variant; accepted: no nm (unstructured)")
        return nm

    @property
    def nm_tuple(self) -> tuple[int, int] | None:
        """(N, M) for semi-structured sparsity, or None for unstructured."""
        return parse_nm(self.nm)


class EvaluationConfig(_Section):
    """What to evaluate after pruning. ``limit_windows`` is the perplexity window budget
    (first K windows; ``None`` = all) and is stored with every result."""

    perplexity: tuple[str, ...] = Field(("wiki",), max_length=64)
    seqlen: int = Field(2048, ge=8, le=MAX_SEQLEN)
    limit_windows: int | None = Field(16, ge=1, le=MAX_COUNT)
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)
    zeroshot_tasks: tuple[str, ...] = Field((), max_length=256)
    zeroshot_limit: int | None = Field(None, ge=1, le=MAX_COUNT)
    attention: bool = False
    attention_tokens: int = Field(512, ge=2, le=MAX_SEQLEN)


# (section, field) -> default of fields added after the first published runs (see canonical_json)
# allocation.eig_dtype: runs published before it existed computed spectra in float32 on GPUs and
# float64 on CPUs; the same config now means float64 everywhere, and re-running such a run makes a
# new attempt of the same run id (the old one stays as history, its rows say eig_dtype=float32).
HASHED_WHEN_CHANGED: dict[tuple[str, str], Any] = {
    ("calibration", "batch_size"): 1,
    ("allocation", "eig_dtype"): "float64",
    ("allocation", "dlp_alpha"): 0.15,
    ("allocation", "dlp_statistic"): "median",
    ("allocation", "depth_beta"): None,
}


class RunConfig(_Section):
    """One run: model + calibration + allocation + pruning + evaluation."""

    version: int = Field(CONFIG_VERSION, ge=1, le=CONFIG_VERSION)
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    allocation: AllocationConfig = AllocationConfig()
    pruning: PruningConfig = PruningConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
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
    "AllocationConfig", "CalibrationConfig", "EvaluationConfig", "ModelConfig", "PruningConfig",
    "RunConfig", "STRATEGIES", "DTYPES", "GRANULARITIES", "config_error_from", "load_yaml_file",
    "parse_yaml_text", "yaml_error_line",
]
