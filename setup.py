"""Compiles the per-message modules with mypyc (the rest of the build is pyproject.toml's).

The modules listed under ``[tool.taza] compiled`` (the device contract's decode and encode, the
lean intake's MQTT codec, the fleet stage's rules) run for every message before its PUBACK;
compiled, the rules cost about half, the intake's receive path 0.6-0.7 and decode + encode
0.75-0.8 of the source's CPU (docs/performance.md, "The fleet rules compiled" and "The contract
and the codec compiled"). The same modules stay importable as plain Python:
``TAZA_PURE_PYTHON=1`` at build time ships them uncompiled (no C compiler needed), and
``tests/test_compiled.py`` checks both forms say the same. ``devices/_slots.c`` (the decoder's
constructors, ``devices.construct``) is built with them and left out the same way.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent
TAZA = tomllib.loads((HERE / "pyproject.toml").read_text())["tool"]["taza"]
COMPILED: list[str] = TAZA["compiled"]
EXTENSIONS: list[str] = TAZA["extensions"]

# mypyc type-checks what it compiles, in pip's build environment, where the dependencies
# (numpy, orjson, pydantic, ...) are not installed yet on a fresh venv: imports it cannot find
# are Any, and only the compiled modules' own errors count. `make lint` (mypy strict, with
# the dependencies) is what checks the types.
MYPYC_CONFIG = """[mypy]
python_version = 3.11
ignore_missing_imports = True
follow_imports = silent
warn_unused_ignores = False
"""

ext_modules = []
if os.environ.get("TAZA_PURE_PYTHON", "") not in ("1", "true", "yes"):
    from mypyc.build import mypycify

    config = HERE / "build" / "mypyc.ini"
    config.parent.mkdir(exist_ok=True)
    config.write_text(MYPYC_CONFIG)
    ext_modules = mypycify(["--config-file", str(config), *COMPILED], opt_level="3")
    for path in EXTENSIONS:
        name = path.removesuffix(".c").replace("/", ".")
        ext_modules.append(Extension(name, [path]))

setup(ext_modules=ext_modules)
