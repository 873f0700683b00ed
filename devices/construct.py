"""Fast constructors for the frozen, slotted message dataclasses.

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__``, which costs
about as much as the rest of decoding a small payload. The decoder only builds values it has
already validated, so it may use generated constructors that store into the slots directly.
Same signature and defaults as the class; classes with ``__post_init__`` or default factories
keep their own ``__init__`` (tests compare both paths for every message type).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A function building ``cls`` like ``cls(...)`` does, minus the frozen-setattr overhead."""
    if not dataclasses.is_dataclass(cls) or hasattr(cls, "__post_init__"):
        return cls
    fields = dataclasses.fields(cls)
    if any(f.default_factory is not dataclasses.MISSING or not f.init for f in fields):
        return cls
    if "__slots__" not in cls.__dict__:
        return cls
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
