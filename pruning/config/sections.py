"""The sections of a run's configuration that need no more than a type and a range: model,
calibration data, pruning method and evaluation (:class:`pruning.config.run_config.RunConfig` holds them with
:class:`pruning.config.allocation.AllocationConfig`).

Every invalid value raises a pydantic error that :func:`pruning.config.run_config.config_error_from` turns into
a :class:`pruning.errors.ConfigError` naming the field, the value and what is accepted.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from pruning.methods.nm_pattern import format_nm, parse_nm
from pruning.methods.registry import get_method, method_names, prunes

Dtype = Literal["float32", "bfloat16", "float16"]
DTYPES: tuple[str, ...] = get_args(Dtype)
#: Bounds shared by several fields (docs/jobs.md "Validation"): seeds are 32-bit like numpy's,
#: sequence lengths stop at 128k tokens, counts at sizes no run here comes near.
MAX_SEED = 2**32 - 1
MAX_SEQLEN = 131_072
MAX_BATCH = 4096
MAX_COUNT = 10_000_000
MAX_TEXT = 1000


class ConfigSection(BaseModel):
    """A section of the config: unknown fields are errors and assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def matching(pattern: str, accepted: str) -> AfterValidator:
    """A field validator (``Annotated[str, matching(...)]``): the whole string must match the
    regular expression ``pattern``; else ValueError(``accepted``), the accepted forms in words."""

    def check(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(accepted)
        return value

    return AfterValidator(check)


DeviceName = Annotated[str, matching(r"cpu|cuda(:\d+)?|mps|auto", "accepted: 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto'")]


class ModelConfig(ConfigSection):
    """Which model to load: alias, Hugging Face id, local directory or ``.gguf`` file."""

    name: str = Field("smollm2-135m", max_length=4096)
    dtype: Dtype = "float32"
    device: DeviceName = "cpu"
    # "auto": measured (pruning.model.placement): the whole model on the device when it fits, else one block
    # at a time; true: always one block at a time with the model on the CPU; false: always on the device.
    offload: bool | Literal["auto"] = Field("auto", description="auto | true | false: model on `device` or one block at a time")
    revision: str | None = Field(None, max_length=256)

    @field_validator("name")
    @classmethod
    def _name_nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must be a non-empty model reference")
        return v.strip()


class CalibrationConfig(ConfigSection):
    """Calibration data: ``nsamples`` windows of ``seqlen`` tokens drawn with ``seed``."""

    dataset: str = Field("wiki", min_length=1, max_length=4096)
    nsamples: int = Field(128, ge=1, le=100_000)
    seqlen: int = Field(2048, ge=8, le=MAX_SEQLEN)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    # samples per block forward in the block-sequential passes. 1 is the reference codes' loop
    # (one sample at a time); larger batches cut the per-call overhead that dominates small models
    # on a GPU, at the cost of rounding-level differences in the statistics (other GEMM shapes).
    batch_size: int = Field(1, ge=1, le=MAX_BATCH)


class PruningConfig(ConfigSection):
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


class EvaluationConfig(ConfigSection):
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

