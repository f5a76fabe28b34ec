"""One registry type for everything bindense selects by name: tasks, data formats, binarizers, heads, colour
maps, distillation losses and schedules (docs/EXTENDING.md).

A :class:`Registry` is a ``{name: object}`` mapping that knows what it holds (``kind``) and which setting
selects from it (``setting``), so every miss raises the same clear error: the unknown name, the setting, and
the registered names. Register with a decorator (``@LOSSES.register("mse")``) or a call
(``FORMATS.register("voc", fmt)``); ``temporarily`` adds an entry for a ``with`` block (tests, notebooks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

T = TypeVar("T")


class Registry(dict[str, T]):
    """``{name: object}`` of one ``kind`` (e.g. ``"task"``), selected by ``setting`` (e.g. ``"data.tasks"``).

    ``aliases`` maps extra names to registered ones (``lookup`` accepts both).
    """

    def __init__(self, kind: str, setting: str | None = None, aliases: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.setting = setting
        self.aliases = dict(aliases or {})

    @overload
    def register(self, name: str, obj: None = None, *, replace: bool = False) -> Callable[[T], T]: ...
    @overload
    def register(self, name: str, obj: T, *, replace: bool = False) -> T: ...

    def register(self, name: str, obj: Any = None, *, replace: bool = False) -> Any:
        """Add ``obj`` under ``name`` and return it; without ``obj``, a decorator that does so. A taken name is an
        error unless ``replace``."""

        def add(item: T) -> T:
            if not replace and (name in self or name in self.aliases):
                held = f"an alias of {self.aliases[name]!r}" if name in self.aliases else repr(self[name])
                raise ValueError(f"{self.kind} {name!r} is already registered ({held})")
            self[name] = item
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name``; returns what it held."""
        return self.pop(self.resolve(name))

    def resolve(self, name: str) -> str:
        """The registered name ``name`` stands for (itself or an alias target); a ValueError names the choices."""
        key = self.aliases.get(name, name) if isinstance(name, str) else name
        if not isinstance(key, str) or key not in self:
            raise ValueError(self.error(name))
        return key

    def error(self, name: object) -> str:
        """The message for an unknown ``name``: the kind, the setting and the registered names."""
        where = f" ({self.setting})" if self.setting else ""
        also = f"; aliases {self.aliases}" if self.aliases else ""
        return f"unknown {self.kind} {name!r}{where}; registered: {', '.join(self)}{also}"

    def lookup(self, name: str) -> T:
        """The object registered as ``name`` (or an alias); a ValueError names the setting and the choices."""
        return self[self.resolve(name)]

    @contextmanager
    def temporarily(self, name: str, obj: T) -> Iterator[T]:
        """Register ``obj`` as ``name`` for the duration of a ``with`` block."""
        self.register(name, obj)
        try:
            yield obj
        finally:
            self.pop(name, None)
