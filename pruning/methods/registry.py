"""The pruning-method registry: one :class:`MethodSpec` per method — its name, what it does, the
calibration statistics it needs and its kernel. The config, the CLI, the app's form and the
pruning loop (:mod:`pruning.run.prune`) read the methods from here and nowhere else.

Statistics a method may need (collected block by block by :mod:`pruning.calibration.sequential`):

* ``"none"`` — the weights alone (magnitude; ``dense`` prunes nothing): no calibration pass;
* ``"activations"`` — ``act_sq_sum`` ``(in,)``, the sum over calibration tokens of x_j^2 of every
  input feature (Wanda's ||X_j||_2 = sqrt(act_sq_sum), Sun et al. 2023);
* ``"hessian"`` — also ``hessian`` ``(in, in)``, H = 2/N X^T X over N tokens (SparseGPT,
  Frantar & Alistarh 2023).

A kernel is pure: ``kernel(W, stats, sparsity, nm, options) -> Tensor`` with ``W`` the float32
weight ``(out, in)`` on the compute device, ``stats`` a :class:`LayerStatistics` holding what the
method declared, ``nm`` ``(N, M)`` or None and ``options`` a :class:`KernelOptions`. It returns a
bool mask ``(out, in)`` (True = prune) or the new weight ``(out, in)`` (methods that also update
the kept weights). A method may add a *group kernel* for matrices that read the same input and
share one Hessian (q/k/v, gate/up): ``group_kernel(weights, hessian, sparsities, nm, options,
overwrite_hessian) -> new weights``; SparseGPT uses it to invert that Hessian once per group.

Kernels are given as callables or as ``"module:function"`` text, imported on first use, so that the
config and the app list the methods without importing torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ContextManager, Literal, get_args

from pruning.registries import Registry, resolve

if TYPE_CHECKING:
    from torch import Tensor

Statistics = Literal["none", "activations", "hessian"]
STATISTICS: tuple[str, ...] = get_args(Statistics)
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True)
class LayerStatistics:
    """Calibration statistics of one linear layer's input, on the kernel's device (None when the
    method did not ask for them)."""

    act_sq_sum: Tensor | None = None  # (in,) float32: sum over tokens of x_j^2
    hessian: Tensor | None = None  # (in, in) float32: H = 2/N X^T X


@dataclass(frozen=True)
class KernelOptions:
    """Method options of :class:`pruning.config.run_config.PruningConfig` (SparseGPT's column block and
    damping, Frantar & Alistarh 2023: 128 and 1 % of mean diag H); other kernels ignore them."""

    blocksize: int = 128
    percdamp: float = 0.01


Kernel = Callable[["Tensor", LayerStatistics, float, "tuple[int, int] | None", KernelOptions], "Tensor"]
GroupKernel = Callable[
    [list["Tensor"], "Tensor", list[float], "tuple[int, int] | None", KernelOptions, bool], list["Tensor"]
]
#: ``check(nm, options)`` raises ValueError (text starting with the field) on options the kernel cannot use.
OptionsCheck = Callable[["tuple[int, int] | None", KernelOptions], None]


@dataclass(frozen=True)
class MethodSpec:
    """One pruning method. ``kernel`` None means the method prunes nothing (``dense``)."""

    name: str
    description: str
    statistics: Statistics = "none"
    kernel: Kernel | str | None = None
    supports_nm: bool = True
    group_kernel: GroupKernel | str | None = None
    check: OptionsCheck | str | None = None

    @property
    def prunes(self) -> bool:
        """False for a method without kernel (``dense``: the unpruned reference)."""
        return self.kernel is not None

    def resolved_kernel(self) -> Kernel:
        """The kernel as a callable (imports ``"module:function"`` on first use)."""
        if self.kernel is None:
            accepted = ", ".join(method_names(pruning_only=True))
            raise ValueError(f"pruning method {self.name!r} prunes nothing; accepted: {accepted}")
        return resolve(self.kernel)

    def resolved_group_kernel(self) -> GroupKernel | None:
        """The group kernel as a callable, or None when the method prunes matrix by matrix."""
        return None if self.group_kernel is None else resolve(self.group_kernel)

    def check_options(self, nm: tuple[int, int] | None, options: KernelOptions) -> None:
        """Raise ValueError when ``nm`` or ``options`` do not suit this method."""
        if nm is not None and not self.supports_nm:
            raise ValueError(f"pruning.nm: {nm[0]}:{nm[1]} is invalid for {self.name}, which has no N:M variant; "
                             "accepted: no N:M (unstructured)")
        if self.check is not None:
            resolve(self.check)(nm, options)


def _validate(spec: MethodSpec) -> None:
    if not isinstance(spec.name, str) or not _NAME.fullmatch(spec.name):
        raise ValueError(f"method name {spec.name!r} is invalid; accepted: 1-32 characters of a-z, 0-9 and _ "
                         "starting with a letter (it starts run ids)")
    if spec.statistics not in STATISTICS:
        raise ValueError(f"method {spec.name!r}: statistics {spec.statistics!r} is invalid; "
                         f"accepted: {', '.join(STATISTICS)}")
    if spec.group_kernel is not None and spec.statistics != "hessian":
        raise ValueError(f"method {spec.name!r}: a group kernel shares one Hessian per input group; accepted: "
                         "statistics='hessian' with a group kernel")
    if spec.group_kernel is not None and spec.kernel is None:
        raise ValueError(f"method {spec.name!r}: a group kernel needs a per-matrix kernel too")


_REGISTRY: Registry[MethodSpec] = Registry(
    "method", _validate,
    lambda name, names: ValueError(f"pruning method {name!r} is unknown; accepted: {', '.join(names)}"))


def register_method(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the registry (``replace=True`` to swap an existing entry); returns it.
    Raises ValueError on an invalid name or statistics, or a name already registered."""
    return _REGISTRY.register(spec, replace=replace)


def unregister_method(name: str) -> MethodSpec:
    """Remove a method (tests, benchmarks); returns its entry."""
    return _REGISTRY.unregister(name)


def method_registered(spec: MethodSpec, *, replace: bool = False) -> ContextManager[MethodSpec]:
    """Register ``spec`` for the duration of a ``with`` block, then restore the previous entry
    (or remove it): for tests and for benchmarks that swap a kernel."""
    return _REGISTRY.registered(spec, replace=replace)


def method_names(*, pruning_only: bool = False) -> tuple[str, ...]:
    """Registered names in registration order (``dense`` first); ``pruning_only`` leaves out the
    methods that prune nothing."""
    return tuple(spec.name for spec in _REGISTRY.specs() if spec.prunes or not pruning_only)


def get_method(name: str) -> MethodSpec:
    """The entry of ``name``; ValueError naming the value and the registered names otherwise."""
    return _REGISTRY.get(name)


def statistics_needed(method: str) -> Statistics:
    """What calibration must collect for ``method``: ``"none"``, ``"activations"`` or ``"hessian"``."""
    return get_method(method).statistics


def needs_calibration(method: str) -> bool:
    """True when ``method`` needs a calibration pass (activations or a Hessian)."""
    return statistics_needed(method) != "none"


def needs_hessian(method: str) -> bool:
    """True when calibration must also accumulate H = 2/N X^T X (``collect_hessian``)."""
    return statistics_needed(method) == "hessian"


def prunes(method: str) -> bool:
    """False for ``dense`` (and any method without kernel): nothing to prune."""
    return get_method(method).prunes


# ---- the built-in methods: one entry each; the kernels live in their own modules ---------------------------
BUILTIN_METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("dense", "no pruning: the unpruned reference model"),
    MethodSpec("magnitude", "|W_ij|, smallest pruned over the whole matrix (baseline of Sun et al. 2023)",
               kernel="pruning.methods.magnitude:magnitude_kernel"),
    MethodSpec("wanda", "|W_ij| * ||X_j||_2, smallest pruned per output row (Sun et al. 2023)", "activations",
               kernel="pruning.methods.wanda:wanda_kernel"),
    MethodSpec("sparsegpt", "OBS mask and update of the kept weights from H^-1 (Frantar & Alistarh 2023)", "hessian",
               kernel="pruning.methods.sparsegpt:sparsegpt_kernel",
               group_kernel="pruning.methods.sparsegpt:sparsegpt_group_kernel",
               check="pruning.methods.sparsegpt:check_sparsegpt_options"),
)
for _spec in BUILTIN_METHODS:
    register_method(_spec)
