"""One registry type for everything chosen by name: methods, grids, search spaces,
profiles and datasets (in the manner of timm's `_registry.py`).

- `add` registers; a duplicate name is an error (two modules claiming one name is a bug).
- `get` of an unknown name raises the registry's error with "choose one of: ...".
- `scoped` registers for the length of a `with` block: tests add their own methods and
  grids without leaving them behind or patching private dicts.

It lives here, in the bottom layer (methods imports nothing of the engine), so that every
layer above can use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, ClassVar, Generic, Protocol, TypeVar, cast

if TYPE_CHECKING:
    from sslbench.methods.base import Method

T = TypeVar("T")
C = TypeVar("C", bound="type[Named]")


class Named(Protocol):
    """What `named_class` names: a class with a `name` attribute."""

    name: ClassVar[str]


class UnknownNameError(LookupError):
    """A name no registry entry has; the message lists the choices."""


class Registry(Generic[T]):
    def __init__(self, kind: str, *, error: type[Exception] = UnknownNameError,
                 hint: str = "") -> None:
        """kind: what the entries are, in messages ("method", "grid"); error: what `get`
        raises for an unknown name (the engine's registries raise its ConfigError, a
        one-line user error); hint: appended to that message, e.g. where to list them."""
        self.kind, self.error, self.hint = kind, error, hint
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice "
                             f"({_origin(self._entries[name])} and {_origin(entry)})")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise self.error(f"unknown {self.kind} {name!r}; choose one of: "
                             f"{', '.join(self.names())}{self.hint}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def named_class(self, name: str) -> Callable[[C], C]:
        """A class decorator that names the class (`cls.name`) and registers it: the
        `@register("pi_model")` of methods, `@register_model("mlp")` of networks."""

        def decorate(cls: C) -> C:
            cls.name = name
            self.add(name, cast(T, cls))
            return cls

        return decorate

    @contextlib.contextmanager
    def scoped(self, name: str, entry: T) -> Iterator[T]:
        """Registered inside the block only."""
        self.add(name, entry)
        try:
            yield entry
        finally:
            del self._entries[name]


def _origin(entry: object) -> str:
    return getattr(entry, "__module__", None) or type(entry).__module__


METHODS: Registry[type[Method]] = Registry("method")

M = TypeVar("M", bound="type[Method]")


def register(name: str) -> Callable[[M], M]:
    """Class decorator: `@register("pi_model")` makes the method available by that name."""
    return METHODS.named_class(name)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> type[Method]:
    # Config validation normally catches an unknown name first (as a ConfigError).
    return METHODS.get(name)
