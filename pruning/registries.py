"""One small registry type for the product's extension points (the pruning methods,
:mod:`pruning.methods.registry`; the allocation strategies, :mod:`pruning.allocation.registry`): named specs in
registration order, added with a validation, swapped only when asked, registered for the span of a ``with`` block
(tests, benchmarks), and callables given as ``"module:function"`` text resolved on first use so that the config and
the pages list the entries without importing torch. Pure Python, ground floor: any package may read it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Protocol, TypeVar


class Named(Protocol):
    name: str


S = TypeVar("S", bound=Named)


def resolve(ref: Any) -> Any:
    """``ref`` itself, or the attribute named by ``"module:function"`` text (imported now)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[S]):
    """Specs by name. ``kind``: what an entry is, for messages (``"method"``, ``"strategy"``); ``validate``
    raises ValueError on a spec that cannot be registered; ``missing(name, names)`` makes the exception a
    lookup of an unknown name raises (each extension point keeps its own type and words)."""

    def __init__(self, kind: str, validate: Callable[[S], None],
                 missing: Callable[[object, tuple[str, ...]], Exception]) -> None:
        self.kind, self._validate, self._missing = kind, validate, missing
        self._entries: dict[str, S] = {}

    def register(self, spec: S, *, replace: bool = False) -> S:
        """Add ``spec`` (``replace=True`` to swap an entry of the same name); returns it."""
        self._validate(spec)
        if spec.name in self._entries and not replace:
            raise ValueError(f"{self.kind} {spec.name!r} is already registered; pass replace=True to swap its entry")
        self._entries[spec.name] = spec
        return spec

    def unregister(self, name: str) -> S:
        """Remove ``name``; returns its entry."""
        spec = self.get(name)
        del self._entries[name]
        return spec

    @contextmanager
    def registered(self, spec: S, *, replace: bool = False) -> Iterator[S]:
        """``spec`` registered for the span of a ``with`` block; the previous entry (or none) restored after."""
        previous = self._entries.get(spec.name)
        self.register(spec, replace=replace)
        try:
            yield spec
        finally:
            if previous is None:
                self._entries.pop(spec.name, None)
            else:
                self._entries[spec.name] = previous

    def get(self, name: object) -> S:
        """The entry of ``name``; the extension point's own exception naming the registered ones otherwise."""
        spec = self._entries.get(name) if isinstance(name, str) else None
        if spec is None:
            raise self._missing(name, self.names())
        return spec

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._entries)

    def specs(self) -> tuple[S, ...]:
        """Registered entries in registration order."""
        return tuple(self._entries.values())
