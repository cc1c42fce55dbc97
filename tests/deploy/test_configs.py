"""docker-compose.yml and deploy/haproxy/haproxy.cfg agree with each other and with
oddsfeed's settings (the Docker topology itself runs in `make image-test`)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from oddsfeed.settings import load_settings
from tests.sysdeps import debian_binary

ROOT = Path(__file__).resolve().parents[2]
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_haproxy_config_is_valid() -> None:
    """HAProxy accepts deploy/haproxy/haproxy.cfg (names it cannot resolve here aside)."""
    haproxy = debian_binary("/usr/sbin/haproxy", "haproxy")
    done = subprocess.run([haproxy, "-c", "-dr", "-f", str(HAPROXY_CFG)], capture_output=True,
                          text=True, check=False, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_fanouts_are_the_balancers_servers() -> None:
    """Every fan-out service of docker-compose.yml is a server of both HAProxy backends,
    and HAProxy checks /readyz."""
    services = compose()["services"]
    fanouts = {name for name, s in services.items() if s.get("command") == ["oddsfeed", "serve"]}
    assert fanouts == {"fanout-1", "fanout-2"}
    text = HAPROXY_CFG.read_text()
    for backend in ("fanout_ws", "fanout_http"):
        section = re.split(rf"(?m)^backend {backend}\n", text)[1].split("\n\n", 1)[0]
        assert set(re.findall(r"^\s+server (\S+) ", section, re.M)) == fanouts
        assert "option httpchk GET /readyz" in section


def test_compose_environment_is_valid_oddsfeed_settings() -> None:
    """Every oddsfeed service's environment loads as oddsfeed settings with an external
    store, and the fan-out nodes lift the per-address connect limit behind the balancer."""
    for name, service in compose()["services"].items():
        if name == "haproxy":
            continue
        env = {k: re.sub(r"\$\{[^:]+:-(.*)\}", r"\1", str(v))
               for k, v in service["environment"].items()}
        settings = load_settings(None, env)
        assert settings.redis.url == "redis://valkey:6379"
        if name.startswith("fanout"):
            assert settings.fanout.ip_connect_per_s >= 10_000
            assert service["stop_grace_period"] == "30s"
