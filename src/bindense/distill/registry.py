"""A name -> object registry filled by decorator, with the config setting it serves in its errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class Registry(dict[str, T]):
    """``{name: object}``; ``register(name)`` decorates, ``check(name)`` names the setting on a miss."""

    def __init__(self, kind: str, setting: str) -> None:
        super().__init__()
        self.kind = kind
        self.setting = setting

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: make the decorated object selectable as ``<setting>=name``."""

        def add(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self[name] = obj
            return obj

        return add

    def check(self, name: str) -> str:
        """``name`` when registered, else a ValueError naming the setting and the registered names."""
        if name not in self:
            raise ValueError(f"unknown {self.kind} {name!r} ({self.setting}); expected one of {sorted(self)}")
        return name
