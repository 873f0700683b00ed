"""Fast constructors for the frozen, slotted message dataclasses.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which costs
about as much as the rest of decoding a small payload. The decoder only builds values it has
already validated, so it may use constructors that store into the slots directly. Same
signature and defaults as the class; classes with ``__post_init__`` or default factories keep
their own ``__init__`` (tests compare every path for every message type).

Two forms: ``devices._slots.Maker``, a few lines of C built with the compiled modules, stores
into the slots itself (a Fill from keywords: ≈ 2,000 instructions instead of ≈ 5,500); where it
is not built (``TAZA_PURE_PYTHON=1``), a generated Python function calls each slot's
descriptor.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from devices._slots import Maker

T = TypeVar("T")


def _load_maker() -> type[Maker] | None:
    try:
        from devices._slots import Maker as built
    except ImportError:  # built without a C compiler: the Python form below
        return None
    return built


_MAKER = _load_maker()


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A callable building ``cls`` like ``cls(...)`` does, minus the frozen-setattr overhead."""
    fields = _plain_fields(cls)
    if fields is None:
        return cls
    if _MAKER is None:
        return _generated(cls, fields)
    names = tuple(f.name for f in fields)
    defaults = tuple(f.default for f in fields if f.default is not dataclasses.MISSING)
    try:
        made: Callable[..., T] = _MAKER(cls, names, defaults)
    except (TypeError, ValueError):  # more fields than it holds, or not plain slots
        return _generated(cls, fields)
    return made


def _plain_fields(cls: type) -> tuple[dataclasses.Field[Any], ...] | None:
    """The fields, when ``cls`` is a slotted dataclass that a constructor may fill in itself."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return None
    fields = dataclasses.fields(cls)
    if any(f.default_factory is not dataclasses.MISSING or not f.init or f.kw_only for f in fields):
        return None
    if "__slots__" not in cls.__dict__:
        return None
    return fields


def python_constructor(cls: type[T]) -> Callable[..., T]:
    """The Python form of :func:`fast_constructor`: a generated function, one descriptor call
    per field."""
    fields = _plain_fields(cls)
    return cls if fields is None else _generated(cls, fields)


def _generated(cls: type[T], fields: tuple[dataclasses.Field[Any], ...]) -> Callable[..., T]:
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    params, body = [], []
    for i, f in enumerate(fields):
        namespace[f"_set{i}"] = cls.__dict__[f.name].__set__
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default{i}"] = f.default
            params.append(f"{f.name}=_default{i}")
        body.append(f"    _set{i}(o, {f.name})")
    src = (
        f"def make({', '.join(params)}):\n    o = _new(_cls)\n"
        + "\n".join(body)
        + "\n    return o\n"
    )
    exec(src, namespace)
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"fast_{cls.__name__}"
    return make
