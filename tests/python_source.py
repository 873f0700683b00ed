"""``python -m tests.python_source TRACE``: one of ``tests/test_compiled.py``'s traces, run with
every module of pyproject.toml's ``[tool.taza] compiled`` list imported from its ``.py``.

A ``.so`` beside a ``.py`` is imported instead of it, so the finder goes in before anything of
the project is imported (this module imports only the standard library at the top): the
subprocess of the test that compares both forms.
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
COMPILED: list[str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["taza"][
    "compiled"
]


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


def main(trace: str) -> None:
    names = [module_name(p) for p in COMPILED]
    early = [n for n in names if n in sys.modules]
    assert not early, f"imported before the finder: {early}"
    sys.meta_path.insert(0, SourceFinder(names))
    for name in names:
        file = str(importlib.import_module(name).__file__)
        assert file.endswith(".py"), file
    from tests import test_compiled

    sys.stdout.write("\n".join(test_compiled.TRACES[trace]()) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
