"""Sweeps: expand a grid of run settings over a base RunConfig into validated runs.

A sweep spec (YAML or dict)::

    base:                      # a RunConfig mapping, or a path to a RunConfig YAML (relative to the spec)
      model: {name: smollm2-135m}
      evaluation: {limit_windows: 4}
    models: [smollm2-135m]                    # -> model.name
    methods: [magnitude, wanda, sparsegpt]    # -> pruning.method
    presets: [null, "QKVout + split"]         # -> allocation.preset (null: no preset)
    sparsities: [0.5, 0.7]                    # -> pruning.sparsity
    epsilons: [0.2, 0.3]                      # -> allocation.epsilon (the notes' "0.2 ww")
    seeds: [0, 1]                             # -> calibration.seed (which calibration windows are drawn)
    grid:                                     # any further dotted keys
      allocation.strategy: [uniform, linear]
    variants:                                 # one more axis whose points set several keys at once
      - {allocation.strategy: uniform}
      - {allocation.strategy: linear, allocation.preset: QKVout}
    include:                                  # extra single runs (overrides of base), not crossed
      - {pruning.method: wanda, pruning.sparsity: 0.7, allocation.epsilon: 0.05}

The runs are the Cartesian product of every list (in the order above, then ``grid`` keys, then
``variants``), plus every ``include`` entry — at most :data:`MAX_SWEEP_RUNS` combinations, counted
from the list lengths before anything is expanded (:func:`sweep_size`).
Combinations that give the same run id are run once. An invalid combination is reported with
its settings and the field that rejects it (ConfigError).
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pruning.config.run_config import RunConfig
from pruning.errors import ConfigError

log = logging.getLogger(__name__)

#: Shorthand sweep keys and the RunConfig field each one sets.
SHORTHAND_KEYS: dict[str, str] = {
    "models": "model.name",
    "methods": "pruning.method",
    "presets": "allocation.preset",
    "sparsities": "pruning.sparsity",
    "epsilons": "allocation.epsilon",
    "seeds": "calibration.seed",
}
_OTHER_KEYS = ("base", "grid", "name", "variants", "include")
#: Most combinations one sweep may have (CLI and app): planning validates every one (2,500 took 19 s).
MAX_SWEEP_RUNS = 512


@dataclass(frozen=True)
class InvalidCombination:
    """One grid point that does not validate: its settings and the ConfigError text (field named)."""

    overrides: dict[str, Any]
    error: str


@dataclass
class SweepPlan:
    """What a sweep would run: unique configs, rejected combinations, and what is already done."""

    configs: list[RunConfig]
    n_combinations: int
    invalid: list[InvalidCombination] = field(default_factory=list)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    done: dict[str, str] = field(default_factory=dict)      # run_id -> "queue job <id>" | "results store"
    active: dict[str, str] = field(default_factory=dict)    # run_id -> job id queued/running

    @property
    def n_duplicates(self) -> int:
        """Valid combinations that collapse onto an earlier run id."""
        return self.n_combinations - len(self.invalid) - len(self.configs)

    @property
    def to_run(self) -> list[RunConfig]:
        """Configs neither done nor already queued/running."""
        return [c for c in self.configs if c.run_id not in self.done and c.run_id not in self.active]

    def summary(self) -> str:
        """Human-readable summary (printed by ``python -m pruning sweep`` before it submits)."""
        lines = ["sweep axes:"]
        lines += [f"  {key}: {', '.join(map(_fmt, values))}" for key, values in self.axes.items()] or ["  (none)"]
        lines.append(
            f"{self.n_combinations} combinations -> {len(self.configs)} unique runs"
            f" ({self.n_duplicates} duplicate, {len(self.invalid)} invalid)"
        )
        lines.append(f"already done: {len(self.done)}; already queued/running: {len(self.active)}; "
                     f"to run: {len(self.to_run)}")
        for bad in self.invalid:
            lines.append(f"  invalid {_fmt_overrides(bad.overrides)}: {bad.error}")
        return "\n".join(lines)


def load_sweep_spec(path: str | Path) -> dict[str, Any]:
    """Read a sweep YAML file; a string ``base`` is resolved relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"sweep file {str(path)!r} must hold a mapping, got {type(spec).__name__}")
    if isinstance(spec.get("base"), str) and not Path(spec["base"]).is_absolute():
        spec["base"] = str(path.parent / spec["base"])
    return spec


def sweep_axes(spec: dict[str, Any]) -> dict[str, list[Any]]:
    """The dotted-key axes of a spec, in product order (shorthands first, then ``grid``)."""
    unknown = [k for k in spec if k not in SHORTHAND_KEYS and k not in _OTHER_KEYS]
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {unknown}; accepted: {', '.join([*SHORTHAND_KEYS, *_OTHER_KEYS])}")
    axes: dict[str, list[Any]] = {}
    for key, dotted in SHORTHAND_KEYS.items():
        if key in spec:
            axes[dotted] = _as_list(key, spec[key])
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"sweep.grid: must map dotted keys to lists, got {type(grid).__name__}")
    for dotted, values in grid.items():
        if dotted in axes:
            short = next(k for k, v in SHORTHAND_KEYS.items() if v == dotted)
            raise ConfigError(f"sweep.grid.{dotted}: also set by {short!r}; give it once")
        axes[str(dotted)] = _as_list(f"grid.{dotted}", values)
    return axes


def _base_config(spec: dict[str, Any]) -> RunConfig:
    base = spec.get("base")
    if base is None:
        return RunConfig()
    if isinstance(base, (str, Path)):
        return RunConfig.from_yaml(base)
    if isinstance(base, RunConfig):
        return base
    if not isinstance(base, dict):
        raise ConfigError(f"sweep.base: must be a RunConfig mapping or a YAML path, got {type(base).__name__}")
    try:
        return RunConfig.from_dict(base)
    except ConfigError as exc:
        raise ConfigError(f"sweep.base: {exc}") from None


def sweep_size(spec: dict[str, Any]) -> int:
    """Number of combinations of ``spec`` (product of the list lengths x variants, plus the
    includes), without expanding them."""
    size = len(_override_list(spec, "variants")) or 1
    for values in sweep_axes(spec).values():
        size *= len(values)
    return size + len(_override_list(spec, "include"))


def check_sweep_size(n_combinations: int, max_runs: int = MAX_SWEEP_RUNS) -> None:
    """ConfigError naming the count and the cap when a sweep has more than ``max_runs`` combinations."""
    if n_combinations > max_runs:
        raise ConfigError(
            f"sweep: {n_combinations:,} combinations is more than the cap of {max_runs:,} per sweep; "
            "shorten the lists or split the sweep"
        )


def plan_sweep(spec: dict[str, Any], *, queue: Any = None, check_done: bool = True,
               check_store: bool = True, max_runs: int = MAX_SWEEP_RUNS) -> SweepPlan:
    """Expand ``spec`` and classify each unique run as done, queued/running, or to run.

    ``queue`` is a :class:`pruning.jobs.JobQueue` (default: this data directory's queue).
    Raises ConfigError before expanding anything when the spec has more than ``max_runs``
    combinations (:data:`MAX_SWEEP_RUNS`).
    """
    check_sweep_size(sweep_size(spec), max_runs)
    base = _base_config(spec)
    axes = sweep_axes(spec)
    keys = list(axes)
    variants = _override_list(spec, "variants") or [{}]
    includes = _override_list(spec, "include")
    configs: dict[str, RunConfig] = {}
    invalid: list[InvalidCombination] = []
    n = 0
    points = [
        {**dict(zip(keys, values)), **variant}
        for values in itertools.product(*(axes[k] for k in keys)) for variant in variants
    ] + includes
    for overrides in points:
        n += 1
        try:
            config = base.with_overrides(overrides) if overrides else base
        except ConfigError as exc:
            invalid.append(InvalidCombination(overrides, str(exc)))
            continue
        configs.setdefault(config.run_id, config)
    shown = dict(axes)
    if variants != [{}]:
        shown["variants"] = variants
    if includes:
        shown["include"] = includes
    plan = SweepPlan(configs=list(configs.values()), n_combinations=n, invalid=invalid, axes=shown)
    if check_done:
        classify(plan, queue=queue, check_store=check_store)
    return plan


def classify(plan: SweepPlan, *, queue: Any = None, check_store: bool = True) -> SweepPlan:
    """Fill ``plan.done`` and ``plan.active`` from the job queue (and the results store).
    Planning only reads: without ``queue`` the data directory's queue is opened read-only, and a
    data directory without a queue has no jobs (nothing is created before a job is submitted)."""
    from pruning.jobs.local import store_has_run
    from pruning.jobs.queue import JobQueue

    queue = queue if queue is not None else JobQueue.open_read_only()
    for config in plan.configs:
        run_id = config.run_id
        ok = queue.find_run(run_id, ("succeeded",)) if queue is not None else None
        if ok is not None:
            plan.done[run_id] = f"job {ok.job_id}"
            continue
        active = queue.find_run(run_id, ("queued", "running")) if queue is not None else None
        if active is not None:
            plan.active[run_id] = active.job_id
        elif check_store and store_has_run(run_id):
            plan.done[run_id] = "results store"
    return plan


def plan_from_store(where: str, *, queue: Any = None, root: Any = None) -> SweepPlan:
    """A plan that re-runs stored runs: the config of the latest attempt of every run of the
    ``runs`` view matching the SQL condition ``where`` (e.g. ``"run_id IN (SELECT run_id FROM
    spectra WHERE eig_dtype = 'float32')"``). A stored config that no longer maps to its run id
    (a field whose meaning changed without keeping old ids) is listed as invalid, never re-run
    under another id. Imported references are never selected."""
    import json

    from pruning.store import run_sql
    from pruning.store.errors import StoreError

    if not where.strip():
        raise ConfigError("--from-store: give an SQL condition on the runs view, e.g. \"model = 'smollm2-135m'\"")
    try:
        rows = run_sql(f"SELECT run_id, config_json FROM runs WHERE kind = 'run' AND ({where}) ORDER BY run_id", root)
    except StoreError as exc:
        raise ConfigError(f"--from-store: {where!r} is not a valid condition on the runs view: {exc}") from None
    configs: list[RunConfig] = []
    invalid: list[InvalidCombination] = []
    for run_id, config_json in zip(rows["run_id"], rows["config_json"]):
        try:
            config = RunConfig.from_dict(json.loads(config_json))
        except (ConfigError, TypeError, ValueError) as exc:
            invalid.append(InvalidCombination({"run_id": run_id}, f"stored config does not validate: {exc}"))
            continue
        if config.run_id != run_id:
            invalid.append(InvalidCombination({"run_id": run_id}, f"stored config now maps to {config.run_id}"))
            continue
        configs.append(config)
    plan = SweepPlan(configs=configs, n_combinations=len(rows), invalid=invalid, axes={"from store": [where]})
    return classify(plan, queue=queue)


def expand_sweep(spec: dict[str, Any] | str | Path) -> list[RunConfig]:
    """All unique, valid RunConfigs of a sweep spec (dict, or path to a YAML file).

    Raises ConfigError listing every invalid combination with the field that rejects it.
    """
    if not isinstance(spec, dict):
        spec = load_sweep_spec(spec)
    plan = plan_sweep(spec, check_done=False)
    if plan.invalid:
        raise ConfigError(
            f"sweep: {len(plan.invalid)} of {plan.n_combinations} combinations are invalid: "
            + " | ".join(f"{_fmt_overrides(b.overrides)}: {b.error}" for b in plan.invalid)
        )
    return plan.configs


def _override_list(spec: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """``variants``/``include``: a list of {dotted key: value} mappings (validated shape)."""
    items = spec.get(key) or []
    if not isinstance(items, list) or not all(isinstance(i, dict) and i for i in items):
        raise ConfigError(f"sweep.{key}: must be a list of non-empty mappings of dotted keys to values")
    return [{str(k): v for k, v in item.items()} for item in items]


def _as_list(key: str, values: Any) -> list[Any]:
    if isinstance(values, (list, tuple)):
        if not values:
            raise ConfigError(f"sweep.{key}: empty list; give at least one value")
        return list(values)
    if isinstance(values, dict):
        raise ConfigError(f"sweep.{key}: must be a list of values, got a mapping")
    return [values]


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value)


def _fmt_overrides(overrides: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={_fmt(v)}" for k, v in overrides.items()) + "}"
