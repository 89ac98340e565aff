"""Frozen, self-validating configuration dataclasses that round-trip to plain dicts."""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar

C = TypeVar("C", bound="ConfigBase")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base of recfx configs: subclasses validate in ``validate`` and never rewrite themselves.

    ``to_dict`` produces JSON-friendly values (tuples become lists, enums their values, nested configs dicts);
    ``from_dict`` rebuilds the config and rejects unknown keys and values of the wrong JSON type (``true`` or
    ``"4"`` for an int field), naming the field.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` if a field is out of range; subclasses extend it."""

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        if not isinstance(data, dict):
            raise TypeError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} keys {unknown}; valid keys: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            try:
                kwargs[name] = _from_plain(hints[name], value)
            except _WrongType as err:
                where = "" if err.value is value else f" in {value!r}"
                raise TypeError(f"{cls.__name__}.{name}: expected {err.expected}, got {err.value!r}"
                                f"{' (a bool)' if isinstance(err.value, bool) else ''}{where}") from None
        return cls(**kwargs)

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _to_plain(value: Any) -> Any:
    if isinstance(value, ConfigBase):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


class _WrongType(TypeError):
    def __init__(self, expected: str, value: Any) -> None:
        super().__init__(expected)
        self.expected, self.value = expected, value


#: JSON scalars by the field type they may fill (an int fills a float field; a bool fills only a bool field).
_SCALARS: dict[type, tuple[type, ...]] = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _from_plain(hint: Any, value: Any) -> Any:
    if hint in _SCALARS:
        if not isinstance(value, _SCALARS[hint]) or (hint is not bool and isinstance(value, bool)):
            raise _WrongType("a number" if hint is float else f"an {hint.__name__}" if hint is int else
                             f"a {hint.__name__}", value)
        return value
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _from_plain(non_none[0], value) if len(non_none) == 1 else value
    if isinstance(hint, type) and issubclass(hint, ConfigBase) and isinstance(value, dict):
        return hint.from_dict(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if origin is dict and isinstance(value, dict) and len(args) == 2:  # JSON turns int keys into strings
        key_type, value_type = args
        return {(key_type(k) if key_type is int and isinstance(k, str) else k): _from_plain(value_type, v)
                for k, v in value.items()}
    if origin is tuple and isinstance(value, (list, tuple)):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_plain(args[0], v) for v in value)
        if args:
            return tuple(_from_plain(a, v) for a, v in zip(args, value))
        return tuple(value)
    return value
