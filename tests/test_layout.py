"""The shape of the code base: what is shipped stands alone, and the imports run one way.

- The wheel holds ingest, devices, simulator and devstack (with the broker config) and not the
  test suite; installed with no checkout on sys.path, they import, mosquitto starts from the
  shipped config and the demo runs.
- No module outside tests/ imports tests.
- The import graph between the top-level packages and their modules has no cycle.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.servers import MissingBinary, find_binary
from tests.conftest import REPO
from tests.test_compiled import COMPILED

PACKAGES = ("ingest", "devices", "simulator", "devstack")
_SKIP_DIRS = {".git", ".venv", "var", "build", "__pycache__", ".mypy_cache", ".ruff_cache"}


def _python_files(root: Path) -> Iterator[Path]:
    """Every ``.py``, and every ``.pyi``: a stub stands for a C module (``devices/_slots.c``)."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [
            d for d in dirnames if d not in _SKIP_DIRS and not d.endswith((".egg-info", "_cache"))
        ]
        for name in filenames:
            if name.endswith((".py", ".pyi")):
                yield Path(dirpath) / name


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import statement, including
    those inside functions and TYPE_CHECKING blocks; relative imports made absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield target, [a.name for a in node.names], node.lineno


def test_no_module_outside_tests_imports_tests() -> None:
    offenders = []
    for path in _python_files(REPO):
        rel = path.relative_to(REPO)
        if rel.parts[0] == "tests":
            continue
        for target, _, line in _imports(path, _module_name(path)):
            if target == "tests" or target.startswith("tests."):
                offenders.append(f"{rel}:{line} imports {target}")
    assert not offenders, "shipped code, bench/ or tools import the test suite:\n" + "\n".join(
        offenders
    )


def import_graph() -> dict[str, set[str]]:
    """{module: modules of the four packages and bench/ it imports}."""
    files = {_module_name(p): p for top in (*PACKAGES, "bench") for p in _python_files(REPO / top)}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        edges: set[str] = set()
        for target, names, _ in _imports(path, module):
            resolved = [resolve(f"{target}.{n}") for n in names] if names else []
            for hit in resolved or [resolve(target)]:
                if hit is not None and hit != module:
                    edges.add(hit)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    """The check below would pass vacuously if the finder never found anything."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_has_no_cycles() -> None:
    graph = import_graph()
    assert "devstack.demo.stack" in graph["devstack.demo.__main__"], "the graph misses edges"
    module_cycles = cycles(graph)
    assert not module_cycles, f"modules importing each other: {module_cycles}"
    packages: dict[str, set[str]] = {}
    for module, edges in graph.items():
        top = module.split(".")[0]
        packages.setdefault(top, set()).update(
            e.split(".")[0] for e in edges if e.split(".")[0] != top
        )
    package_cycles = cycles(packages)
    assert not package_cycles, f"top-level packages importing each other: {package_cycles}"
    assert "devstack" not in set().union(*(packages[p] for p in ("ingest", "devices")))


# -- the installed wheel, without a checkout --------------------------------------------------


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(python, site dir): the wheel built from a copy of this checkout, installed with
    `pip install --target` into a fresh venv whose only other path is this venv's
    dependencies (added by a .pth line, so the editable install's finder stays off)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(
        REPO,
        src,
        symlinks=True,
        ignore=shutil.ignore_patterns(*_SKIP_DIRS, "*.egg-info", ".*_cache", ".hypothesis"),
    )
    wheels = tmp / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # Built as plain Python (TAZA_PURE_PYTHON=1): the fallback a city without a compiler
    # installs, and 45 s less than compiling (the editable install the suite runs on is the
    # compiled build, tests/test_compiled.py).
    build = subprocess.run(
        [*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TAZA_PURE_PYTHON": "1"},
    )
    assert build.returncode == 0, f"pip wheel failed:\n{build.stdout}\n{build.stderr}"
    (wheel,) = wheels.glob("taza_telemetry-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/")], "the wheel ships the test suite"
    assert not [n for n in names if n.endswith(".so")], "TAZA_PURE_PYTHON=1 built a .so"
    assert set(COMPILED) <= set(names), "the wheel lacks a module setup.py would compile"
    assert "devstack/mosquitto.conf" in names
    site = tmp / "site"
    install = subprocess.run(
        [*pip, "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, f"pip install failed:\n{install.stdout}\n{install.stderr}"
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]
    Path(venv_site, "taza-test.pth").write_text(f"{site}\n{deps}\n")
    return python, site


def _run(python: Path, code: str, cwd: Path, timeout: float = 60) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_wheel_imports_without_a_checkout(installed: tuple[Path, Path], tmp_path: Path) -> None:
    python, site = installed
    out = _run(
        python,
        "import ingest, devices, simulator, devstack, devstack.demo.__main__\n"
        "for m in (ingest, devices, simulator, devstack): print(m.__file__)\n"
        "import importlib.util; print(importlib.util.find_spec('tests'))\n"
        "import ingest.fleet.state; print(ingest.fleet.state.__file__)",
        cwd=tmp_path,
    )
    files = out.splitlines()
    assert len(files) == 6, out
    assert files[5] == str(site / "ingest" / "fleet" / "state.py"), files[5]
    for file in files[:4]:
        assert Path(file).is_relative_to(site), f"imported from outside the wheel: {file}"
    assert files[4] == "None", f"the test suite is importable from the install: {files[4]}"


@pytest.mark.integration
def test_installed_devstack_starts_mosquitto_from_its_shipped_config(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    try:
        find_binary("mosquitto")
    except MissingBinary as exc:
        pytest.fail(str(exc), pytrace=False)
    python, site = installed
    shipped = site / "devstack" / "mosquitto.conf"
    assert not shipped.is_symlink()
    assert shipped.read_text() == (REPO / "mosquitto.conf").read_text()
    out = _run(
        python,
        "from pathlib import Path\n"
        "from devstack.servers import SHIPPED_MOSQUITTO_CONF, Mosquitto\n"
        "with Mosquitto(Path('broker')) as m:\n"
        "    print(SHIPPED_MOSQUITTO_CONF, m.url)\n"
        "    print('max_queued_messages 1000000' in m.conf_path.read_text())",
        cwd=tmp_path,
    )
    conf, url, raised_limit = out.split()
    assert Path(conf) == shipped
    assert url.startswith("mqtt://127.0.0.1:")
    assert raised_limit == "True", "the generated config lost the shipped settings"


@pytest.mark.integration
def test_demo_runs_from_the_wheel_without_a_checkout(
    installed: tuple[Path, Path], tmp_path: Path
) -> None:
    """`python -m devstack.demo` from the install: tools as `python -m`, data in ./var/demo."""
    for binary in ("mosquitto", "influxd"):
        try:
            find_binary(binary)
        except MissingBinary as exc:
            pytest.fail(str(exc), pytrace=False)
    python, _ = installed
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    done = subprocess.run(
        [python, "-m", "devstack.demo", "--short"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=180,
        start_new_session=True,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "OK: nothing lost; everything stopped cleanly" in out
    assert "everything goes to var/demo/" in out
    assert (tmp_path / "var" / "demo" / "run.jsonl").stat().st_size > 0
