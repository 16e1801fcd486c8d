"""The method registry: `@register("name")` on a method class in its own file in losses/.

losses/__init__.py imports every module of the package, so a new method is one new file and no
list is edited anywhere. `order` places a method in the listing (`python -m losses`,
`python reproduce.py list`): loss-space methods first, then gradient-space ones, each by `order`,
then by name; a method that gives no order comes after those that do.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping

from losses.base import METHOD_KINDS, Method, check_implemented

__all__ = ["METHODS", "register"]

# Names are config keys (`method.name: ...`, `method.<name>.<option>`): lower case, digits and dashes,
# and not one of the method section's own keys.
NAME = re.compile(r"[a-z][a-z0-9-]*")
RESERVED = ("name", "lr_mult", "options")

_classes: dict[str, type[Method]] = {}
_order: dict[str, int] = {}


def register(name: str, order: int = 10_000):
    """Class decorator: register a method class (a `LossMethod` or `GradientMethod`) under `name`."""

    def add(cls: type[Method]) -> type[Method]:
        if not (isinstance(cls, type) and issubclass(cls, Method)):
            raise TypeError(f"method {name!r}: @register takes a Method subclass, got {cls!r}")
        if not NAME.fullmatch(name) or name in RESERVED:
            raise ValueError(f"method {name!r} ({cls.__module__}.{cls.__qualname__}): a method name is lower case "
                             f"letters, digits and dashes, and not one of {list(RESERVED)}")
        old = _classes.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"method {name!r} is registered twice: by {old.__module__}.{old.__qualname__} and "
                             f"{cls.__module__}.{cls.__qualname__}")
        check_implemented(cls)  # a registered class is a concrete method: it defines weigh or aggregate
        _classes[name] = cls
        _order[name] = order
        return cls

    return add


def _key(name: str) -> tuple[int, int, str]:
    return METHOD_KINDS.index(_classes[name].kind), _order[name], name


class _Methods(MutableMapping):
    """A live view of the registry: name -> method class, in listing order. Setting an item registers
    (tests add scratch methods with `monkeypatch.setitem`); deleting one unregisters it."""

    def __setitem__(self, name: str, cls: type[Method]) -> None:
        _classes.pop(name, None)
        register(name, _order.get(name, 10_000))(cls)

    def __delitem__(self, name: str) -> None:
        del _classes[name]
        _order.pop(name, None)

    def __getitem__(self, name: str) -> type[Method]:
        return _classes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(_classes, key=_key))

    def __len__(self) -> int:
        return len(_classes)

    def __repr__(self) -> str:
        return f"METHODS({list(self)})"


METHODS: Mapping[str, type[Method]] = _Methods()
