"""Named registries (methods, models, data sets, pairs, feeds) and method discovery.

A miss lists the known names, so a typo on the command line gets an answer, not a
KeyError. Built-in methods are found by importing every module of the packages
``dfkd_bench.methods`` and ``dfkd_bench.baselines`` (a new file there is a new method,
no metadata to edit); outside packages advertise theirs in the ``dfkd_bench.methods``
entry-point group, and one that fails to load is reported, not fatal.
"""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata
from typing import Callable, Generic, Iterator, TypeVar

from .config import check_namespace
from .errors import UserError

T = TypeVar("T")

ENTRY_POINT_GROUP = "dfkd_bench.methods"
BUILTIN_PACKAGES = ("dfkd_bench.methods", "dfkd_bench.baselines")


class Registry(Generic[T]):
    def __init__(self, kind: str, modules: tuple[str, ...] = (), loader: Callable[[], None] | None = None):
        self.kind = kind
        # What registers the built-in entries, run on the first look-up (``loader``: the
        # methods' discovery, so ``plan_runs`` works from a fresh interpreter, not only
        # after the CLI has discovered them).
        self._loader = loader
        self._items: dict[str, T] = {}
        # Modules that register built-in entries, imported on the first look-up, so an entry
        # defined in a module nothing else imports is still found (built-in data sets live
        # in more than one module, and a module importing them all would be an import circle).
        self._modules = modules

    def _import_builtins(self) -> None:
        if self._modules:
            modules, self._modules = self._modules, ()
            for module in modules:
                importlib.import_module(module)
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader()

    def register(self, name: str, obj: T | None = None):
        """Register ``obj`` under ``name``; without ``obj`` returns a decorator."""

        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        self._import_builtins()
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "none"
            raise UserError(f"unknown {self.kind} {name!r}; known: {known}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        self._import_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        self._import_builtins()
        return iter(sorted(self._items))

    def items(self):
        self._import_builtins()
        return sorted(self._items.items())

    def names(self) -> list[str]:
        self._import_builtins()
        return sorted(self._items)


METHODS: Registry = Registry("method", loader=lambda: discover_methods())
MODELS: Registry[Callable] = Registry("model")
DATASETS: Registry[Callable] = Registry("data set", modules=("dfkd_bench.data", "dfkd_bench.segdata"))
PAIRS: Registry = Registry("pair")

# One line per outside plugin that failed to load; the CLI prints them as warnings.
PLUGIN_ERRORS: list[str] = []
_discovered = False


def import_package_modules(package: str) -> list[str]:
    """Import every module of ``package`` (each registers what it defines); returns
    their names."""
    pkg = importlib.import_module(package)
    names = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
            names.append(info.name)
    return names


def discover_methods() -> None:
    """Register the built-in methods (package import) and the outside plugins (entry
    points; one that raises on import is recorded in ``PLUGIN_ERRORS``, once)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package in BUILTIN_PACKAGES:
        import_package_modules(package)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001  (a broken plugin must not break the other commands)
            dist = getattr(ep.dist, "name", "?")
            PLUGIN_ERRORS.append(f"plugin {ep.name!r} ({ep.value}, package {dist}) failed to load: "
                                 f"{type(exc).__name__}: {exc}".splitlines()[0])
            continue
        name = getattr(obj, "name", None)
        if isinstance(obj, type) and name and name not in METHODS:
            register_method(obj)


def register_method(cls: type) -> type:
    """Class decorator: register a method under its ``name``, after checking that its
    config shares no field name with ``RunConfig``. Method files import it from
    ``dfkd_bench.method``, beside the contract; it is defined here so that discovery,
    which registers outside plugins' classes, imports nothing above the registries."""
    if not getattr(cls, "name", ""):
        raise UserError(f"method class {cls.__module__}.{cls.__name__} has no `name`; give it one, e.g. "
                        f"name = \"{cls.__name__.lower()}\"")
    if cls.name in METHODS and METHODS.get(cls.name) is not cls:
        other = METHODS.get(cls.name)
        raise UserError(f"method name {cls.name!r} of {cls.__module__}.{cls.__name__} is taken by "
                        f"{other.__module__}.{other.__name__}; choose another name")
    check_namespace(cls.config_cls, f"method {cls.name}")
    METHODS.register(cls.name, cls)
    return cls


def load_plugin(module: str) -> None:
    """Import ``module`` (``--plugin``); it registers its methods when imported."""
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise UserError(f"cannot import plugin module {module!r}: {exc}; "
                        "pass an importable module path such as my_pkg.my_method") from None
    except UserError as exc:
        raise UserError(f"plugin module {module!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001  (whatever a plugin raises on import is one line)
        raise UserError(f"plugin module {module!r} failed to import: {type(exc).__name__}: {exc}"
                        .splitlines()[0]) from None
