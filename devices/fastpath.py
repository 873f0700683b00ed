"""The schema compiled into straight-line validators for the common case: a valid payload.

Walking the declarative :class:`~devices.schema.Record` costs a Python call per field; this
generates, once per record, one function with every check inlined (type, range, length,
pattern) that builds the message body directly. It only answers "all known fields plainly
valid?": on anything doubtful it returns ``None`` and the decoder runs the generic validator,
which finds the first broken rule and its exact reason. So the compiled code decides speed,
never outcomes (a property test holds both paths to the same results).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from devices.construct import fast_constructor
from devices.errors import Rejected
from devices.schema import (
    CONTROL_RE,
    Choice,
    CodeSet,
    Integer,
    Number,
    PercentByMaterial,
    Record,
    Text,
)

FastBuilder = Callable[..., Any]
"""``fast(doc, items=None)`` -> the body object, or ``None`` when the generic path must decide."""


def compile_record(record: Record, cls: type, passed: tuple[str, ...] = ()) -> FastBuilder:
    """Compile ``record`` into a validator building ``cls``.

    Every init field of ``cls`` comes from the record (validated), from ``passed`` (arguments
    validated elsewhere, e.g. a deposit's items) or from its dataclass default.
    """
    ns: dict[str, Any] = {
        "_Rejected": Rejected,
        "_ctrl": CONTROL_RE.search,
        "_new": fast_constructor(cls),
    }
    params = "".join(f", {p}=None" for p in passed)
    src = [f"def fast(doc{params}):", "    get = doc.get"]
    index = {name: i for i, name in enumerate(record.fields)}
    for name, kind in record.fields.items():
        i = index[name]
        src.append(f"    v = get({name!r})")
        if name in record.required:
            src += ["    if v is None:", "        return None"]
            src += ["    " + line for line in _check(kind, i, name, ns)]
        else:
            src += ["    if v is not None:"]
            src += ["        " + line for line in _check(kind, i, name, ns)]
        src.append(f"    v{i} = v")
    args = []
    for f in dataclasses.fields(cls):
        if f.name in index:
            i = index[f.name]
            if f.name not in record.required and f.default is not None:
                ns[f"_default{i}"] = f.default
                src += [f"    if v{i} is None:", f"        v{i} = _default{i}"]
            args.append(f"v{i}")
        elif f.name in passed:
            args.append(f.name)
        elif f.default is not dataclasses.MISSING:
            ns[f"_default_{f.name}"] = f.default
            args.append(f"_default_{f.name}")
        else:
            raise ValueError(f"{cls.__name__}.{f.name} has no source in the record")
    src.append(f"    return _new({', '.join(args)})")
    exec("\n".join(src), ns)
    fast: FastBuilder = ns["fast"]
    return fast


def _check(kind: object, i: int, name: str, ns: dict[str, Any]) -> list[str]:
    """Lines validating ``v`` (converting it to its stored form) or returning ``None``."""
    if isinstance(kind, Number):
        ns[f"_lo{i}"], ns[f"_hi{i}"] = kind.lo, kind.hi
        return [
            "t = type(v)",
            "if t is float:",
            f"    if not _lo{i} <= v <= _hi{i}:",
            "        return None",
            "elif t is int:",
            f"    if not _lo{i} <= v <= _hi{i}:",
            "        return None",
            "    v = float(v)",
            "else:",
            "    return None",
        ]
    if isinstance(kind, Integer):
        ns[f"_lo{i}"], ns[f"_hi{i}"] = kind.lo, kind.hi
        return [f"if type(v) is not int or not _lo{i} <= v <= _hi{i}:", "    return None"]
    if isinstance(kind, Text):
        lines = [
            f"if type(v) is not str or not {kind.min_len} <= len(v) <= {kind.max_len} "
            "or _ctrl(v) is not None:",
            "    return None",
        ]
        if kind.pattern is not None:
            ns[f"_pat{i}"] = kind.pattern.fullmatch
            lines += [f"if _pat{i}(v) is None:", "    return None"]
        return lines
    if isinstance(kind, Choice):
        ns[f"_values{i}"] = kind.values
        return [f"if type(v) is not str or v not in _values{i}:", "    return None"]
    if isinstance(kind, CodeSet):
        ns[f"_codes{i}"] = kind.codes
        return [
            "if type(v) is not list:",
            "    return None",
            "for c in v:",
            f"    if type(c) is not str or c not in _codes{i}:",
            "        return None",
            "v = tuple(sorted(v))",
            "if len(set(v)) != len(v):",
            "    return None",
        ]
    if isinstance(kind, PercentByMaterial):
        ns[f"_materials{i}"] = kind.materials
        ns[f"_lo{i}"], ns[f"_hi{i}"] = kind.percent.lo, kind.percent.hi
        return [
            "if type(v) is not dict:",
            "    return None",
            "pairs = []",
            "for m, p in v.items():",
            "    t = type(p)",
            f"    if m not in _materials{i} or not (t is float or t is int) "
            f"or not _lo{i} <= p <= _hi{i}:",
            "        return None",
            "    pairs.append((m, float(p)))",
            "pairs.sort()",
            "v = tuple(pairs)",
        ]
    ns[f"_check{i}"] = kind.check  # type: ignore[attr-defined]
    return [
        "try:",
        f"    v = _check{i}(v, {name!r})",
        "except _Rejected:",
        "    return None",
    ]
