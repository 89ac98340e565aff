"""Typed registries with decorator registration (backends, passes, models, quant rules)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from recfx.errors import UnknownKeyError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping where registering a name twice raises and unknown names list the known ones.

    Example:
        >>> reg: Registry[int] = Registry("numbers")
        >>> reg.add("one", 1)
        1
        >>> reg.get("one")
        1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; raises ``ValueError`` if the name is taken."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} names must be non-empty strings, got {name!r}")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered; pick another name or unregister it first")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def remove(self, name: str) -> T:
        """Unregister ``name`` and return what was registered."""
        self._check(name)
        return self._items.pop(name)

    def get(self, name: str) -> T:
        """Look ``name`` up; an unknown name raises with the list of known names and close matches."""
        self._check(name)
        return self._items[name]

    def _check(self, name: str) -> None:
        if name not in self._items:
            close = difflib.get_close_matches(str(name), list(self._items), n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise UnknownKeyError(f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}.{hint}")

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
