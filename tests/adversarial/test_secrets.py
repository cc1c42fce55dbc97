"""Auth and secrets: token edge cases, weak or published secrets, the demo token route,
and credentials that must never be printed."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
import redis
from click.testing import CliRunner
from structlog.testing import capture_logs

from oddsfeed.api.app import build_app
from oddsfeed.auth import DEMO_SECRET, Authenticator, AuthError
from oddsfeed.cli import main
from oddsfeed.core.errors import StoreError
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.log import redact_credentials
from oddsfeed.settings import load_settings
from oddsfeed.store import Store
from tests.api.conftest import SECRET, Api, api_settings, mint, serve
from tests.test_cli import ROOT, Lines, child_env, spawn

__all__ = ["child_env", "spawn"]  # fixtures shared with tests/test_cli.py
# In-process commands configure logging; each test undoes it (fixture in tests/conftest.py).
pytestmark = pytest.mark.usefixtures("restore_logging")

PASSWORD = "hunter2-do-not-print"


async def test_numeric_string_exp_is_always_401(api: Api) -> None:
    """A token whose exp is a numeric string is 401 on every one of repeated requests
    (it used to alternate 200 / 401 through the verified-token cache)."""
    token = jwt.encode({"sub": "x", "scope": "odds:read", "exp": "99999999999"}, SECRET,
                       algorithm="HS256")
    statuses = [(await api.call("GET", "/v1/markets", token=token))[0] for _ in range(6)]
    assert statuses == [401] * 6


@pytest.mark.parametrize("claims", [{"exp": 10**30}, {"exp": 1e30}, {"iat": "1"},
                                    {"nbf": "1"}, {"exp": True}])
async def test_bad_time_claims_are_401(api: Api, claims: dict[str, Any]) -> None:
    """exp 10^30 (past auth.max_token_lifetime_s), a boolean exp and string iat/nbf are 401."""
    assert (await api.call("GET", "/v1/markets", token=mint(**claims)))[0] == 401


async def test_max_token_lifetime_is_configurable(make_api: Any) -> None:
    """With auth.max_token_lifetime_s 60 a 10-minute token is 401 and a 1-minute one is
    accepted; minting past the maximum is refused."""
    api = await make_api(**{"auth.max_token_lifetime_s": 60})
    assert (await api.call("GET", "/v1/markets", token=mint(ttl=600)))[0] == 401
    assert (await api.call("GET", "/v1/markets", token=mint(ttl=50)))[0] == 200
    auth = Authenticator(api.settings.auth)
    with pytest.raises(AuthError, match="max_token_lifetime_s"):
        auth.mint("x", ["odds:read"], ttl_s=61, now_s=0)


@pytest.mark.parametrize(("secret", "message"), [
    ("x", "1 bytes; an hs256 secret needs at least 32"),
    ("é" * 15, "30 bytes"),
    (DEMO_SECRET, "published demo secret"),
])
def test_weak_or_published_secrets_refused_at_start(secret: str, message: str,
                                                    valkey_url: str) -> None:
    """`oddsfeed serve` and `oddsfeed ingest push` refuse an HS256 secret under 32 bytes
    and the published demo secret with a clear error before starting anything; so does
    the Authenticator."""
    with pytest.raises(AuthError, match=re.escape(message)):
        Authenticator(load_settings(None, {}, {"auth.hs256_secret": secret}).auth)
    for args in (["serve", "--redis-url", valkey_url],
                 ["ingest", "push", "--redis-url", valkey_url, "--port", "0"]):
        result = CliRunner().invoke(main, args, env={"ODDSFEED_AUTH__HS256_SECRET": secret})
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output, args


def test_run_refuses_the_demo_secret_off_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """`oddsfeed run` with the demo secret on a non-loopback host exits 1 before binding."""
    monkeypatch.chdir(ROOT)
    result = CliRunner().invoke(main, ["run", "--host", "0.0.0.0"],
                                env={"ODDSFEED_AUTH__HS256_SECRET": DEMO_SECRET})
    assert result.exit_code == 1
    assert "published demo secret" in result.output


def test_compose_file_has_no_secret_fallback() -> None:
    """docker-compose.yml requires the secret from the environment (no demo fallback)."""
    text = (ROOT / "docker-compose.yml").read_text()
    assert DEMO_SECRET not in text
    assert "${ODDSFEED_AUTH__HS256_SECRET:?" in text


async def test_demo_token_route_exists_only_with_a_demo_token(make_api: Any, valkey_url: str,
                                                              redis_client: Any) -> None:
    """Without a demo token (any app but `oddsfeed run` in demo mode) GET /v1/demo/token
    is a 404, even with a secret set; with one it answers it."""
    api = await make_api()
    assert (await api.call("GET", "/v1/demo/token", token=None))[0] == 404
    store = await Store.connect(valkey_url)
    runner, port = await serve(build_app(api_settings(valkey_url), store, demo_token="tok"))
    try:
        async with api.session.get(f"http://127.0.0.1:{port}/v1/demo/token") as r:
            assert (r.status, (await r.json())["token"]) == (200, "tok")
    finally:
        await runner.cleanup()
        await store.close()


def test_run_with_a_real_secret_serves_no_demo_token(spawn: Any,
                                                     child_env: dict[str, str]) -> None:
    """`oddsfeed run` with a secret of its own prints no token and has no demo route."""
    import urllib.error
    import urllib.request

    child_env["ODDSFEED_AUTH__HS256_SECRET"] = SECRET
    proc = spawn("run")
    lines = Lines(proc.stderr)
    ready = lines.wait_for_event("oddsfeed ready")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(ready["http_url"] + "v1/demo/token", timeout=5)
    assert err.value.code == 404
    proc.terminate()
    proc.wait(20)
    assert "trader token" not in "".join(lines.seen)


async def test_store_url_password_is_never_printed(monkeypatch: pytest.MonkeyPatch,
                                                   spawn: Any, child_env: dict[str, str],
                                                   capsys: Any) -> None:
    """A redis URL password appears neither in a StoreError, nor in any log line, nor in
    show-config, nor in `oddsfeed run`'s output."""
    with EmbeddedValkey() as own:
        with redis.Redis.from_url(own.url) as admin:
            admin.config_set("requirepass", PASSWORD)
        url = own.url.replace("redis://", f"redis://:{PASSWORD}@")
        bad = own.url.replace("redis://", "redis://:wrong-" + PASSWORD + "@")
        with pytest.raises(StoreError) as err:
            await Store.connect(bad)
        assert PASSWORD not in str(err.value)
        assert "redis://***@" in str(err.value)
        with capture_logs(processors=[redact_credentials]) as logs:
            import structlog

            structlog.get_logger("t").warning("store down", error=f"at {url}", url=url)
        assert PASSWORD not in json.dumps(logs)
        monkeypatch.chdir(ROOT)
        shown = CliRunner().invoke(main, ["show-config"], env={"ODDSFEED_REDIS__URL": url,
                                                               "ODDSFEED_AUTH__HS256_SECRET":
                                                               SECRET})
        assert shown.exit_code == 0, shown.output
        assert PASSWORD not in shown.output
        assert json.loads(shown.output)["redis"]["url"].startswith("redis://***@")
        child_env["ODDSFEED_REDIS__URL"] = url
        proc = spawn("run")
        lines = Lines(proc.stderr)
        ready = lines.wait_for_event("oddsfeed ready")
        assert ready["redis_url"].startswith("redis://***@")
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
        assert PASSWORD not in "".join(lines.seen) + out


def test_docs_name_the_lifetime_setting() -> None:
    """docs/operations.md documents auth.max_token_lifetime_s and the admin port."""
    text = Path(ROOT / "docs" / "operations.md").read_text()
    assert "max_token_lifetime_s" in text
    assert "admin_port" in text
