"""TensorRT optimisation profiles from the captured dynamic dims: plain functions, no TensorRT.

A graph's inputs name their dynamic dims by symbol (``TensorSpec.shape`` holds ``"batch"``, ``"seq"``; an ONNX
input's ``dim_param``). A profile gives each symbol a ``(min, opt, max)`` range; every input dim that uses the
symbol gets it, so inputs that share a dim stay consistent. Several profiles (short and long histories, say) build
one engine that serves each range with its own kernels.

Example:
    >>> p = derive_profiles([("tokens", ("batch", "seq", 64))], [{"batch": (1, 8, 32), "seq": (16, 128, 512)}])
    >>> p[0].shapes["tokens"]
    ((1, 16, 64), (8, 128, 64), (32, 512, 64))
    >>> select_profile(p, {"tokens": (4, 600, 64)})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... fit no optimisation profile of this engine: profile 'p0': tokens dim 1 is 600, outside [16, 512]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

#: The range a dynamic dim gets when only its example size is known: [1, example, GROWTH * example].
DEFAULT_GROWTH = 4

Shape = tuple[int, ...]
InputDims = tuple[str, tuple["int | str", ...]]


@dataclasses.dataclass(frozen=True)
class DimRange:
    """``min <= opt <= max``, all >= 1."""

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not (isinstance(self.min, int) and isinstance(self.opt, int) and isinstance(self.max, int)):
            raise TypeError(f"a dim range is three ints, got {self.min!r}:{self.opt!r}:{self.max!r}")
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"a dim range needs 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")


@dataclasses.dataclass(frozen=True)
class Profile:
    """One optimisation profile: input name -> (min, opt, max) shapes."""

    name: str
    shapes: Mapping[str, tuple[Shape, Shape, Shape]]

    def violation(self, shapes: Mapping[str, Shape]) -> str | None:
        """Why ``shapes`` do not fit this profile (``None`` when they do)."""
        for name, (lo, _, hi) in self.shapes.items():
            if name not in shapes:
                return f"input {name!r} is missing"
            got = tuple(shapes[name])
            if len(got) != len(lo):
                return f"{name} has rank {len(got)}, expected {len(lo)}"
            for dim, (size, a, b) in enumerate(zip(got, lo, hi)):
                if not a <= size <= b:
                    return f"{name} dim {dim} is {size}, outside [{a}, {b}]"
        return None

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "shapes": {k: [list(s) for s in v] for k, v in self.shapes.items()}}


def _as_range(value: DimRange | Sequence[int]) -> DimRange:
    if isinstance(value, DimRange):
        return value
    if len(value) != 3:
        raise ValueError(f"a dim range is (min, opt, max), got {tuple(value)}")
    return DimRange(*value)


def derive_profiles(inputs: Sequence[InputDims], ranges: Sequence[Mapping[str, DimRange | Sequence[int]]],
                    examples: Mapping[str, int] | None = None, names: Sequence[str] | None = None) -> list[Profile]:
    """One :class:`Profile` per entry of ``ranges``.

    Args:
        inputs: ``(input name, shape)`` with ints for static dims and symbol names for dynamic ones.
        ranges: per profile, symbol -> ``(min, opt, max)``. ``[]`` means one profile from ``examples`` alone.
        examples: symbol -> example size; a symbol a profile leaves out gets ``[1, example, 4 * example]``.
        names: profile names (default ``p0``, ``p1``, ...).

    Raises:
        ValueError: a range for a symbol no input uses, a dynamic dim with neither range nor example, bad ranges.
    """
    examples = dict(examples or {})
    symbols = {d for _, shape in inputs for d in shape if isinstance(d, str)}
    ranges = list(ranges) or [{}]
    names = list(names) if names is not None else [f"p{i}" for i in range(len(ranges))]
    if len(names) != len(ranges) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per profile, got {names} for {len(ranges)} profiles")
    profiles = []
    for name, given in zip(names, ranges):
        unknown = sorted(set(given) - symbols)
        if unknown:
            raise ValueError(f"profile {name!r}: {unknown} are not dynamic dims of the inputs; "
                             f"the dynamic dims are {sorted(symbols) or 'none'}")
        dims = {s: _as_range(r) for s, r in given.items()}
        for symbol in sorted(symbols - set(dims)):
            if symbol not in examples:
                raise ValueError(f"profile {name!r}: dynamic dim {symbol!r} has no range; give it as "
                                 f"{symbol}=MIN:OPT:MAX")
            ex = int(examples[symbol])
            dims[symbol] = DimRange(1, max(ex, 1), max(ex, 1) * DEFAULT_GROWTH)
        profiles.append(Profile(name, {inp: _shapes(shape, dims) for inp, shape in inputs}))
    return profiles


def _shapes(shape: Sequence[int | str], dims: Mapping[str, DimRange]) -> tuple[Shape, Shape, Shape]:
    pick = [(dims[d].min, dims[d].opt, dims[d].max) if isinstance(d, str) else (int(d),) * 3 for d in shape]
    return (tuple(p[0] for p in pick), tuple(p[1] for p in pick), tuple(p[2] for p in pick))


def select_profile(profiles: Sequence[Profile], shapes: Mapping[str, Shape]) -> int:
    """The index of the first profile ``shapes`` fit.

    Raises:
        ValueError: they fit none; the message names each profile and the dim that is outside it.
    """
    reasons = []
    for index, profile in enumerate(profiles):
        why = profile.violation(shapes)
        if why is None:
            return index
        reasons.append(f"profile {profile.name!r}: {why}")
    got = {k: tuple(v) for k, v in shapes.items()}
    raise ValueError(f"input shapes {got} fit no optimisation profile of this engine: " + "; ".join(reasons))


def parse_profile(text: str) -> tuple[str | None, dict[str, DimRange]]:
    """``"short@batch=1:8:32,seq=16:128:512"`` -> ``("short", {...})``; the ``NAME@`` part is optional.

    Raises:
        ValueError: text that is not ``[NAME@]SYMBOL=MIN:OPT:MAX[,...]``.
    """
    name, _, body = text.rpartition("@")
    dims: dict[str, DimRange] = {}
    for item in body.split(","):
        symbol, eq, spec = item.partition("=")
        parts = spec.split(":")
        if not eq or not symbol.strip() or len(parts) != 3 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"expected [NAME@]SYMBOL=MIN:OPT:MAX[,...] like short@batch=1:8:32,seq=16:128:512, "
                             f"got {text!r}")
        if symbol.strip() in dims:
            raise ValueError(f"dim {symbol.strip()!r} is given twice in {text!r}")
        dims[symbol.strip()] = DimRange(*(int(p) for p in parts))
    return (name or None), dims
