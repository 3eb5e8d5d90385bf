"""Named registries (methods, models, data sets, pairs) and plugin discovery.

A miss lists the known names, so a typo on the command line gets an answer, not a
KeyError. Built-in methods register through the same entry-point group
(``dfkd_bench.methods``) that outside plugins use.
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from .errors import UserError

T = TypeVar("T")

ENTRY_POINT_GROUP = "dfkd_bench.methods"


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T | None = None):
        """Register ``obj`` under ``name``; without ``obj`` returns a decorator."""

        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def items(self):
        return sorted(self._items.items())

    def names(self) -> list[str]:
        return sorted(self._items)


METHODS: Registry = Registry("method")
MODELS: Registry[Callable] = Registry("model")
DATASETS: Registry[Callable] = Registry("data set")
PAIRS: Registry = Registry("pair")

_discovered = False


def discover_methods() -> None:
    """Import every method advertised in the ``dfkd_bench.methods`` entry-point group.

    An entry point names either a Method subclass or a module that registers
    methods on import; both work because loading it imports the module.
    """
    global _discovered
    if _discovered:
        return
    _discovered = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        obj = ep.load()
        name = getattr(obj, "name", None)
        if isinstance(obj, type) and name and name not in METHODS:
            METHODS.register(name, obj)


def load_plugin(module: str) -> None:
    """Import ``module`` (``--plugin``); it registers its methods when imported."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import plugin module {module!r}: {exc}; "
                        "pass an importable module path such as my_pkg.my_method") from None
