"""The launch form's logic without Streamlit: form values -> a validated RunConfig, the
allowed-roots rule (``pruning.roots``) for every path the form accepts — local model paths and
``text:PATH`` corpora — and sweep grids (how many jobs a grid makes).

Every error is a :class:`pruning.errors.ConfigError` whose text starts with the field
("pruning.sparsity: 1.2 is invalid: ..."), so the form can show it inline next to that field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pruning.allocation.registry import STRATEGY_SPECS, strategy_names
from pruning.app_support.form_fields import FORM_FIELDS, FORM_SECTIONS, STRATEGY_FIELDS
from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError
from pruning.methods.registry import method_names
from pruning.roots import ROOTS_ENV, allowed_roots, check_dataset_root, check_under_roots, resolve_local_path

log = logging.getLogger(__name__)

MODEL_ROOTS_ENV = ROOTS_ENV
#: Form fields that take corpus names, where ``text:PATH`` must lie under the allowed roots.
DATASET_FIELDS = ("calibration.dataset", "evaluation.perplexity")
#: Sweep axes the builder offers: dotted RunConfig key -> label.
SWEEP_AXES: dict[str, str] = {
    "pruning.method": "method",
    "allocation.preset": "preset",
    "allocation.metric": "metric",
    "allocation.epsilon": "ε",
    "pruning.sparsity": "sparsity",
}


def method_choices() -> list[str]:
    """The registered pruning methods (``dense`` first), read now: a method registered after
    import (:func:`pruning.methods.registry.register_method`) is offered too."""
    return list(method_names())


def form_field(field: str, current: Any = None) -> tuple[str, str, dict]:
    """(widget, label, options) of a form field, as :data:`FORM_FIELDS` with the method and strategy
    lists read from their registries at call time; a ``current`` value typed into a select that accepts new options
    (a ``text:PATH`` calibration text) is listed after the choices, so it stays selected."""
    kind, label, options = FORM_FIELDS[field]
    if field == "pruning.method":
        choices = method_choices()
        options = {**options, "options": choices, "index": choices.index("wanda") if "wanda" in choices else 0}
    if field == "allocation.strategy":  # the registry now: a strategy registered after import is offered too
        choices = list(strategy_names())
        options = {**options, "options": choices, "index": choices.index("linear") if "linear" in choices else 0}
    if kind == "select" and options.get("accept_new_options") and isinstance(current, str) \
            and current not in options["options"]:
        options = {**options, "options": [*options["options"], current]}
    return kind, label, options


def shown_fields(section: str, strategy: str | None) -> list[str]:
    """The fields of a form section shown for ``strategy``: a strategy's own knobs
    (:data:`STRATEGY_FIELDS`) only under that strategy."""
    return [f for f in FORM_SECTIONS[section] if f not in inactive_fields(strategy)]


def inactive_fields(strategy: str | None) -> set[str]:
    """The knobs of every strategy but ``strategy``: neither shown nor sent (so a hidden DLP α never
    changes the run id of a linear run)."""
    own = set(STRATEGY_FIELDS.get(str(strategy), ()))  # a knob two strategies read stays for either
    return {f for name, fields in STRATEGY_FIELDS.items() if name != strategy for f in fields} - own


def allowed_model_roots(environ: Mapping[str, str] | None = None) -> list[Path]:
    """Directories under which a path from the form (model or ``text:PATH``) may lie
    (:func:`pruning.roots.allowed_roots`)."""
    return allowed_roots(environ)


def looks_like_local_path(reference: str) -> bool:
    """True when a model reference names a local file or directory rather than an alias or a
    hub id: it is absolute, starts with ``.``/``~``, ends with ``.gguf``, or exists on disk
    (relative to the repository root, as the worker reads it: :func:`pruning.roots.resolve_local_path`)."""
    ref = reference.strip()
    if not ref:
        return False
    if ref.startswith(("/", "~", "./", "../")) or ref in (".", "..") or ref.lower().endswith(".gguf"):
        return True
    return resolve_local_path(ref).exists()


def check_model_reference(reference: str, roots: Iterable[Path] | None = None) -> None:
    """Raise ConfigError (field ``model.name``) when a local model path lies outside the roots.

    Symlinks and ``..`` are resolved first, so a link out of an allowed root is refused too; a
    relative path is read from the repository root, as the worker reads it.
    Aliases and hub ids pass unchanged (the loader validates them).
    """
    if looks_like_local_path(reference):
        check_under_roots("model.name", reference, roots, what="model path", roots_name="model roots")


def check_dataset_references(values: Mapping[str, Any], roots: Iterable[Path] | None = None) -> dict[str, str]:
    """{field: message} for every ``text:PATH`` corpus of the form (calibration text, perplexity
    texts) outside the allowed roots; {} when all are inside or named corpora."""
    errors: dict[str, str] = {}
    for field in DATASET_FIELDS:
        value = values.get(field)
        names = [value] if isinstance(value, str) else list(value or [])
        for name in names:
            try:
                check_dataset_root(field, str(name), roots)
            except ConfigError as exc:
                errors[field] = f"{errors[field]}; {exc}" if field in errors else str(exc)
    return errors


def error_field(error: Exception) -> str:
    """The field a ConfigError names ("pruning.sparsity"), or "config" when none is named."""
    m = re.match(r"\s*([A-Za-z_][\w.]*)\s*:", str(error))
    return m.group(1) if m else "config"


def _blank_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def nested_from_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """{'pruning.sparsity': 0.7} -> {'pruning': {'sparsity': 0.7}}."""
    out: dict[str, Any] = {}
    for dotted, value in values.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def build_run_config(values: Mapping[str, Any], roots: Iterable[Path] | None = None) -> RunConfig:
    """Validate the launch form's values (dotted RunConfig keys) into a RunConfig.

    Blank strings become None (no preset, no N:M, no label); ``tags`` may be a comma list.
    Raises ConfigError naming the field: the config's own validation, plus the allowed-roots
    rule for local model paths and ``text:PATH`` corpora.
    """
    hidden = inactive_fields(values.get("allocation.strategy"))
    clean = {k: _blank_to_none(v) for k, v in values.items() if k not in hidden}
    if isinstance(clean.get("tags"), str):
        clean["tags"] = [t.strip() for t in clean["tags"].split(",") if t.strip()]
    for key in ("evaluation.perplexity", "evaluation.zeroshot_tasks"):
        if clean.get(key) is None and key in clean:
            clean[key] = []
    # drop None for fields whose model default is not None (e.g. an empty optional widget)
    nullable = {
        "allocation.preset",
        "pruning.nm",
        "label",
        "model.revision",
        "evaluation.limit_windows",
        "evaluation.zeroshot_limit",
    }
    clean = {k: v for k, v in clean.items() if v is not None or k in nullable}
    config = RunConfig.from_dict(nested_from_dotted(clean))
    check_model_reference(config.model.name, roots)
    datasets = {"calibration.dataset": config.calibration.dataset,
                "evaluation.perplexity": config.evaluation.perplexity}
    if errors := check_dataset_references(datasets, roots):
        raise ConfigError("; ".join(errors.values()))
    return config


def parse_value_list(text: str, field: str, kind: type = float) -> list[Any]:
    """'0.1, 0.2 0.3' -> [0.1, 0.2, 0.3]; raises ConfigError naming ``field`` on a bad item."""
    items = [s for s in re.split(r"[,\s;]+", text.strip()) if s]
    out = []
    for item in items:
        try:
            out.append(kind(item))
        except ValueError:
            raise ConfigError(f"{field}: {item!r} is invalid: expected a list of {kind.__name__} values") from None
    return out


def grid_size(axes: Mapping[str, list[Any]]) -> int:
    """Number of combinations of a grid (product of the axis lengths; empty axes are ignored)."""
    n = 1
    for values in axes.values():
        if values:
            n *= len(values)
    return n


def sweep_spec(base: RunConfig, axes: Mapping[str, list[Any]]) -> dict[str, Any]:
    """A ``pruning.jobs.sweep`` spec: ``base`` config plus the non-empty ``axes`` (dotted key -> values)
    as its ``grid`` (blank strings -> None, e.g. "no preset")."""
    grid = {k: [_blank_to_none(v) for v in values] for k, values in axes.items() if values}
    return {"base": base.to_dict(), "grid": grid}


def submission_token(configs: Iterable[RunConfig], backend: str) -> str:
    """Identity of one submission (backend + sorted run ids): the form stores it in
    session_state so a double click does not submit the same runs twice."""
    return backend + ":" + ",".join(sorted(c.run_id for c in configs))


#: a strategy's knob without a default: the config rejects the strategy without it (a whole-section
#: error), which the form shows under the knob's field
REQUIRED_KNOBS: dict[str, str] = {s.name: f"allocation.{s.required}" for s in STRATEGY_SPECS if s.required}
_FIELD_SPLIT = re.compile(r";\s+(?=[A-Za-z_][\w.]*:\s)")
_NESTED = re.compile(r"^([A-Za-z_]\w*): \{\.\.\.\} is invalid: (.*)$", re.S)
_SECTIONS = ("model", "calibration", "allocation", "pruning", "evaluation")


def field_errors(error: Exception) -> dict[str, str]:
    """Split a ConfigError text into {dotted field: message} for inline display.

    Accepts the flat form ("pruning.sparsity: 1.2 is invalid: ...; allocation.epsilon: ...") and
    the nested form ("config: {...} is invalid: allocation: {...} is invalid: epsilon: ...");
    a "; accepted: ..." tail stays with its field."""
    out: dict[str, str] = {}
    section: str | None = None
    field = "config"
    for part in _FIELD_SPLIT.split(str(error)):
        while (m := _NESTED.match(part)) is not None:
            section = m.group(1) if m.group(1) in _SECTIONS else section
            part = m.group(2)
        name = error_field(Exception(part))
        if name in ("accepted", "config") and field in out:
            out[field] += "; " + part  # continuation of the previous field's message
            continue
        field = name if "." in name or name in _SECTIONS or section is None else f"{section}.{name}"
        text = part if part.startswith(field) else f"{field}: {part.split(': ', 1)[1] if ': ' in part else part}"
        out[field] = (out[field] + "; " + text) if field in out else text
    return out


def validate_form(
    values: Mapping[str, Any], roots: Iterable[Path] | None = None
) -> tuple[RunConfig | None, dict[str, str]]:
    """(config, {}) for valid form values, else (None, {field: message}) naming every bad field:
    the config's validation and the allowed-roots rule of every path (model, ``text:PATH``) together."""
    errors: dict[str, str] = {}
    model = values.get("model.name")
    if isinstance(model, str):
        try:
            check_model_reference(model, roots)
        except ConfigError as exc:
            errors.update(field_errors(exc))
    errors.update(check_dataset_references(values, roots))
    try:
        config = build_run_config(values, roots=[Path("/")] if errors else roots)
    except ConfigError as exc:
        errors.update(field_errors(exc))
        knob = REQUIRED_KNOBS.get(str(values.get("allocation.strategy")))
        if knob is not None and values.get(knob) is None and "allocation.config" in errors:
            errors[knob] = knob + ": " + errors.pop("allocation.config").split(": ", 1)[1]  # under the knob
        return None, errors
    return (None, errors) if errors else (config, {})
