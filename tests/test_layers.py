"""The layering rules of style.md, checked on the import graph."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ["errors", "prices", "model", "book", "wire", "subscriptions", "session", "betslip",
        "settings"]
FORBIDDEN_IN_CORE = {"asyncio", "websockets", "aiohttp", "redis", "structlog", "uvloop", "socket",
                     "time", "datetime", "os", "oddsfeed.store", "oddsfeed.fanout", "oddsfeed.api",
                     "oddsfeed.embedded", "oddsfeed.cli", "oddsfeed.worker", "ingest"}
ADAPTERS = {"store": {"fanout", "api"}, "fanout": {"api"}, "api": {"fanout"}}


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


@pytest.mark.parametrize("name", CORE)
def test_core_imports_no_io(name: str) -> None:
    """Core modules import no I/O library, clock, environment or adapter."""
    path = ROOT / "oddsfeed" / f"{name}.py"
    assert path.is_file(), f"missing core module {name}"
    assert not _hits(imports(path, "oddsfeed"), FORBIDDEN_IN_CORE)


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_adapters_do_not_import_each_other(adapter: str) -> None:
    """Store, fan-out and API adapters never import one another (the CLI wires them)."""
    banned = {f"oddsfeed.{other}" for other in ADAPTERS[adapter]}
    for path in (ROOT / "oddsfeed" / adapter).glob("*.py"):
        assert not _hits(imports(path, f"oddsfeed.{adapter}"), banned), path


@pytest.mark.parametrize("adapter", ["fanout", "api"])
def test_adapters_use_only_the_public_store_package(adapter: str) -> None:
    """Fan-out and API import the store only through the public oddsfeed.store package."""
    for path in sorted((ROOT / "oddsfeed" / adapter).glob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        found = imports(path, f"oddsfeed.{adapter}")
        internals = {m for m in found if m.startswith("oddsfeed.store.")}
        # `from ..store import Store` yields "oddsfeed.store.Store": a public name, not a module.
        modules = {m for m in internals
                   if (ROOT / (m.replace(".", "/") + ".py")).is_file()
                   or (ROOT / m.replace(".", "/")).is_dir()}
        assert not modules, (rel, modules)
