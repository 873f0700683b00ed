"""Import the modules setup.py compiles from their ``.py`` source, beside their build.

A ``.so`` beside a ``.py`` is imported instead of it; :func:`install` puts a finder first on
``sys.meta_path`` that loads every module of pyproject.toml's ``[tool.taza] compiled`` from its
source. It must run before anything of the project is imported (this module imports only the
standard library): ``tests/python_source.py`` (the compiled form against the source, bit for
bit) and ``bench/hotpath.py`` (the same code's cost in both forms, in one run) use it.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def compiled_modules() -> list[str]:
    """pyproject.toml's ``[tool.taza] compiled``, as paths relative to the source tree."""
    return _listed("compiled")


def extension_sources() -> list[str]:
    """pyproject.toml's ``[tool.taza] extensions``: the C modules built beside them (no
    source form: the code that imports one keeps a Python fallback)."""
    return _listed("extensions")


def _listed(key: str) -> list[str]:
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(doc["tool"]["taza"][key])


def module_name(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


class SourceFinder(importlib.abc.MetaPathFinder):
    """Finds the listed modules' ``.py`` even where a compiled ``.so`` sits beside it."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = set(names)

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name not in self.names:
            return None
        return importlib.util.spec_from_file_location(name, ROOT / (name.replace(".", "/") + ".py"))


def install() -> None:
    """From here on the listed modules load from source; raises if one is already loaded."""
    names = [module_name(p) for p in compiled_modules()]
    early = [n for n in names if n in sys.modules]
    if early:
        raise RuntimeError(f"imported before the source finder: {early}")
    sys.meta_path.insert(0, SourceFinder(names))
    for name in names:
        file = str(importlib.import_module(name).__file__)
        if not file.endswith(".py"):
            raise RuntimeError(f"{name} still loads from {file}")
