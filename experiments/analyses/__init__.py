"""Analyses as plug-ins: each kind of table is one module of this package, registered with `@register("kind")`.

experiments/analyses/base.py states the protocol. This package imports all its modules when it is imported,
so a new kind of table is one new file and no list is edited anywhere; aggregate and report loop over the
analyses a manifest declares (`declared`), in registration order (`order`, then name).
"""

from __future__ import annotations

import importlib
import pkgutil

from experiments.analyses.base import Analysis, Context, RowContext

__all__ = ["Analysis", "Context", "RowContext", "analyses", "declared", "register", "unregister"]

_registered: dict[str, tuple[int, Analysis]] = {}


def register(name: str, order: int = 10_000):
    """Class decorator: register an `Analysis` subclass under `name` (the name a manifest's `analyses:` uses)."""

    def add(cls: type[Analysis]) -> type[Analysis]:
        if not (isinstance(cls, type) and issubclass(cls, Analysis)):
            raise TypeError(f"analysis {name!r}: @register takes an Analysis subclass, got {cls!r}")
        old = _registered.get(name)
        if old is not None and (type(old[1]).__module__, type(old[1]).__qualname__) != (cls.__module__,
                                                                                       cls.__qualname__):
            raise ValueError(f"analysis {name!r} is registered twice: by {type(old[1]).__module__}."
                             f"{type(old[1]).__qualname__} and {cls.__module__}.{cls.__qualname__}")
        cls.name = name
        _registered[name] = (order, cls())
        return cls

    return add


def unregister(name: str) -> None:
    """Remove analysis `name` (tests that register a scratch kind)."""
    _registered.pop(name, None)


def analyses() -> dict[str, Analysis]:
    """name -> analysis, in the order aggregate and report run them."""
    return {n: a for n, (_, a) in sorted(_registered.items(), key=lambda kv: (kv[1][0], kv[0]))}


def declared(manifest) -> list[Analysis]:
    """The analyses `manifest` declares (by its keys or its `analyses:` list), in order; an unknown name in
    `analyses:` is an error listing the registered ones."""
    known = analyses()
    unknown = [n for n in manifest.analyses if n not in known]
    if unknown:
        raise ValueError(f"{manifest.path}: unknown analysis {', '.join(unknown)}; registered analyses: "
                         f"{', '.join(known)}")
    return [a for n, a in known.items() if n in manifest.analyses or a.declared(manifest)]


# Every module of the package, so that each kind's @register runs.
for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_") and _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
