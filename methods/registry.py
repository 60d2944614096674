"""Method registry: methods register by decorator; a duplicate name is an error."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from methods.base import Method

_REGISTRY: dict[str, type[Method]] = {}

M = TypeVar("M", bound="type[Method]")


def register(name: str) -> Callable[[M], M]:
    """Class decorator: `@register("pi_model")` makes the method available by that name."""

    def decorate(cls: M) -> M:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice "
                             f"({_REGISTRY[name].__module__} and {cls.__module__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Method]:
    if name not in _REGISTRY:
        # Config validation normally catches this first; kept for direct library use.
        raise KeyError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")
    return _REGISTRY[name]
