"""Named registries of the model's replaceable parts (losses, fusions): `@register("name")` adds one."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def registrar(table: dict[str, T]) -> Callable[[str], Callable[[T], T]]:
    """A decorator factory that adds the decorated object to `table` under the given name."""

    def named(name: str) -> Callable[[T], T]:
        def register(obj: T) -> T:
            table[name] = obj
            return obj

        return register

    return named
