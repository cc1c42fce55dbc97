"""The command line and the one composition root: reads files and the environment, builds
settings, configures logging, and wires adapters together. No business logic here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from oddsfeed.allinone import demo_mode, run_all
from oddsfeed.config import DEFAULT_CONFIG, load_cli_settings
from oddsfeed.core.redact import MASK, redact_url
from oddsfeed.log import configure_logging, get_logger
from oddsfeed.loop import install_stop_signals, run_async
from oddsfeed.settings import Settings

__all__ = ["load_cli_settings", "main", "run_all", "run_async"]



@dataclass
class _Cli:
    """What the group's options hand to every command."""

    config_path: Path | None
    overrides: dict[str, Any] = field(default_factory=dict)


def _settings(cli: _Cli, flags: dict[str, Any]) -> Settings:
    """Load settings for a command and configure logging from them."""
    settings = load_cli_settings(cli.config_path, {**cli.overrides, **flags})
    configure_logging(settings.log.level, settings.log.format, sys.stderr.isatty())
    return settings


# ------------------------------------------------------------------ options


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    envvar="ODDSFEED_CONFIG",
    help=f"TOML settings file [default: {DEFAULT_CONFIG} if it exists, else built-ins]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error", "critical"], case_sensitive=False),
    help="Overrides log.level.",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    help="Overrides log.format (auto: console on a terminal, else JSON).",
)
@click.version_option(package_name="oddsfeed")
@click.pass_context
def main(
    ctx: click.Context, config_path: Path | None, log_level: str | None, log_format: str | None
) -> None:
    """oddsfeed: live-odds WebSocket push server.

    Settings come from the TOML file, then ODDSFEED_<SECTION>__<KEY> environment
    variables (e.g. ODDSFEED_FANOUT__HEARTBEAT_MS=5000), then flags.
    """
    overrides: dict[str, Any] = {"log.level": log_level, "log.format": log_format}
    ctx.obj = _Cli(config_path=config_path, overrides=overrides)


_SERVER_FLAGS = {
    "host": "server.host",
    "ws_port": "server.ws_port",
    "http_port": "server.http_port",
    "redis_url": "redis.url",
    "workers": "server.workers",
}


def _server_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the flags that map onto server/redis settings."""
    options = [
        click.option("--host", help="Overrides server.host."),
        click.option("--ws-port", type=int, help="Overrides server.ws_port (0: any free)."),
        click.option("--http-port", type=int, help="Overrides server.http_port."),
        click.option("--redis-url", help="Overrides redis.url (empty: embedded Valkey)."),
        click.option("--workers", type=int, help="Overrides server.workers (0: CPU count)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    return {_SERVER_FLAGS[name]: value for name, value in flags.items() if name in _SERVER_FLAGS}


def _check_auth(settings: Settings, *, demo: bool) -> None:
    """Refuse to start with an HS256 secret under 32 bytes, or with the published demo
    secret unless ``demo``."""
    from oddsfeed.auth import AuthError, check_secret

    try:
        check_secret(settings.auth.hs256_secret, demo=demo)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None


def _not_yet(command: str) -> None:
    click.echo(f"oddsfeed {command}: not yet implemented", err=True)
    sys.exit(2)


# ------------------------------------------------------------------ run (all-in-one)


@main.command()
@_server_options
@click.pass_obj
def run(cli: _Cli, /, **flags: Any) -> None:
    """All-in-one: embedded Valkey (unless redis.url is set), demo feed, fan-out and API."""
    from oddsfeed.embedded import EmbeddedServerError  # dev tooling: loaded only when used

    settings = _settings(cli, _overrides(flags))
    _check_auth(settings, demo=demo_mode(settings))
    try:
        code = run_async(run_all(settings))
    except EmbeddedServerError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(code)


# ------------------------------------------------------------------ other commands


@main.command()
@_server_options
@click.pass_obj
def serve(cli: _Cli, /, **flags: Any) -> None:
    """Fan-out + HTTP API node(s) on an external Redis/Valkey (--workers N processes)."""
    from oddsfeed.worker import serve_workers

    settings = _settings(cli, _overrides(flags))
    if not settings.redis.url:
        raise click.ClickException("serve needs redis.url (ODDSFEED_REDIS__URL or --redis-url)")
    _check_auth(settings, demo=False)
    workers = settings.server.worker_count(os.cpu_count())
    sys.exit(serve_workers(settings, settings.redis.url, workers))


def _ingest_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("adapter", type=click.Choice(
            ["simulator", "replay", "http-poll", "stream", "push", "uof"])),
        click.option("--feed-id", default="1", show_default=True, help="Names the source."),
        click.option("--redis-url", help="Overrides redis.url."),
        click.option("--file", type=click.Path(dir_okay=False), help="replay: a .jsonl file."),
        click.option("--speed", type=float, default=1.0, show_default=True,
                     help="replay: 10 = ten times faster, 0 = as fast as possible."),
        click.option("--lanes", type=int, default=8, show_default=True,
                     help="replay: markets applied concurrently (order kept per market)."),
        click.option("--url", help="http-poll: the odds API URL."),
        click.option("--bookmaker", default="", help="http-poll: which bookmaker's odds."),
        click.option("--odds-format", type=click.Choice(
            ["decimal", "fractional", "american", "hk", "malay", "indo"]),
                     default="decimal", show_default=True,
                     help="http-poll/replay: the provider's odds format."),
        click.option("--interval", type=float, default=5.0, show_default=True,
                     help="http-poll: seconds between polls."),
        click.option("--timeout", type=float, default=10.0, show_default=True,
                     help="http-poll: per-request timeout in seconds."),
        click.option("--address", help="stream: HOST:PORT (TCP), tls://HOST:PORT or a ws:// URL."),
        click.option("--filter", help="stream: the marketFilter as JSON."),
        click.option("--api-key", help="http-poll: the provider's API key, sent as the apiKey "
                     "query parameter (ingest.api_key, env ODDSFEED_INGEST__API_KEY); "
                     "never printed."),
        click.option("--app-key", help="stream: the application key sent in the login "
                     "(ingest.app_key, env ODDSFEED_INGEST__APP_KEY); never printed."),
        click.option("--session", help="stream: the session token sent in the login "
                     "(ingest.session, env ODDSFEED_INGEST__SESSION); never printed."),
        click.option("--keep-trying", is_flag=True,
                     help="stream: keep reconnecting (with backoff) after the provider "
                     "refuses the credentials, instead of stopping with an error."),
        click.option("--metrics-port", type=int, default=0, show_default=True,
                     help="Serve /metrics on this port (0: off)."),
        click.option("--port", type=int, help="push: the port to listen on."),
        click.option("--amqp-url", envvar="ODDSFEED_UOF_AMQP_URL", show_envvar=True,
                     help="uof: the broker URL, e.g. amqps://ACCESS_TOKEN:@HOST:5671/"
                          "%2Funifiedfeed%2FBOOKMAKER_ID (the access token is the user name,"
                          " /unifiedfeed/BOOKMAKER_ID the virtual host); never logged."),
        click.option("--exchange", default="unifiedfeed", show_default=True,
                     help="uof: the topic exchange."),
        click.option("--routing-key", multiple=True,
                     help="uof: a binding key, repeatable (default '#': every message), "
                          "e.g. 'hi.-.live.#' and '-.-.-.alive.#'."),
        click.option("--uof-mapping", default="config/uof.toml", show_default=True,
                     type=click.Path(dir_okay=False),
                     help="uof: the mapping file (market id + specifiers -> our ids)."),
        click.option("--producer-timeout", type=float, default=20.0, show_default=True,
                     help="uof: seconds without an alive before a producer is down and its "
                          "markets are suspended."),
        click.option("--events", type=int, help="simulator: events (demo.events)."),
        click.option("--seed", type=int, help="simulator: seed (demo.seed)."),
        click.option("--rate", type=float, help="simulator: ticks per second."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run_ingest(cli: _Cli, adapter: str, opts: dict[str, Any], out: Path | None) -> None:
    from ingest.main import run_adapter
    from ingest.replay import Recorder
    from ingest.uof_amqp import BrokerRefused
    from oddsfeed.store import Store

    settings = _settings(cli, {"redis.url": opts.pop("redis_url", None),
                               "ingest.api_key": opts.pop("api_key", None),
                               "ingest.app_key": opts.pop("app_key", None),
                               "ingest.session": opts.pop("session", None)})
    if adapter == "push":
        _check_auth(settings, demo=False)  # its endpoint verifies tokens like the API
    if adapter == "replay" and not opts.get("file"):
        raise click.ClickException("replay needs --file")
    if adapter == "http-poll" and not opts.get("url"):
        raise click.ClickException("http-poll needs --url")
    if adapter == "uof" and not opts.get("amqp_url"):
        raise click.ClickException("uof needs --amqp-url (or ODDSFEED_UOF_AMQP_URL)")
    if adapter == "uof" and out is not None:
        raise click.ClickException("uof messages cannot be recorded for replay")
    if adapter == "uof":
        from ingest.uof import load_uof_mapping

        try:
            load_uof_mapping(Path(opts.get("uof_mapping") or "config/uof.toml"))
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    if adapter == "stream" and not opts.get("address"):
        raise click.ClickException("stream needs --address HOST:PORT")
    if out is None and not settings.redis.url:
        raise click.ClickException("ingest needs redis.url (ODDSFEED_REDIS__URL or --redis-url)")
    from ingest.main import load_mappings

    try:
        mappings = load_mappings(Path(settings.ingest.mapping_file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    from ingest.betfair import StreamRefused

    async def main() -> int:
        log = get_logger("oddsfeed.ingest")
        stop = asyncio.Event()
        install_stop_signals(stop, log)
        recorder = None
        fh = None
        store = None
        if out is not None:
            fh = out.open("w", encoding="utf-8")
            recorder = Recorder(fh)
        else:
            store = await Store.connect(settings.redis.url, cluster=settings.redis.cluster,
                                        history_len=settings.redis.history_len)
        try:
            runner = await run_adapter(adapter, opts, store or _NoStore(), settings, stop=stop,
                                       recorder=recorder, mappings=mappings)
            log.info("ingest finished", adapter=adapter, counts=runner.counts)
        except (StreamRefused, BrokerRefused) as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if store is not None:
                await store.close()
            if fh is not None:
                fh.close()
        return 0

    sys.exit(run_async(main()))


class _NoStore:
    async def apply(self, update: Any) -> Any:
        return None

    async def apply_many(self, updates: Any) -> list[Any]:
        return [None] * len(updates)


@main.command()
@_ingest_options
@click.pass_obj
def ingest(cli: _Cli, /, adapter: str, **opts: Any) -> None:
    """Run one feed adapter (simulator, replay, http-poll, stream, push, uof) into the store.

    \b
    simulator  generated markets: --events, --seed, --rate; no credentials.
    replay     a recording: --file, --speed, --lanes; no credentials.
    http-poll  an Odds-API-v4-style URL: --url, --bookmaker, --odds-format, --interval,
               --timeout; the API key with --api-key (env ODDSFEED_INGEST__API_KEY),
               sent as the apiKey query parameter and masked in logs. A 304 keeps alive
               only the markets of the last 200 body.
    stream     an Exchange-Stream-style feed: --address, --filter; logs in with --app-key
               and --session (env ODDSFEED_INGEST__APP_KEY, ODDSFEED_INGEST__SESSION)
               before subscribing. Failures back off exponentially with jitter up to 30 s;
               a refused login (bad app key, invalid session) stops with an error unless
               --keep-trying.
    push       POST /v1/push on --port; pushers need a bearer JWT with odds:write
               (auth.hs256_secret or auth.public_keys). Each token subject has its own
               seq ordering; an update not applied answers ok: false.
    uof        Sportradar-UOF-style XML over AMQP: --amqp-url (env ODDSFEED_UOF_AMQP_URL,
               credentials masked in logs), --exchange, --routing-key, --uof-mapping,
               --producer-timeout; see docs/uof.md.

    Secrets are never printed: show-config masks them.
    """
    _run_ingest(cli, adapter, opts, None)


@main.command()
@_ingest_options
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The JSON Lines file to write.")
@click.pass_obj
def record(cli: _Cli, /, adapter: str, out: Path, **opts: Any) -> None:
    """Record an adapter's raw provider messages to a JSON Lines file for `ingest replay`."""
    _run_ingest(cli, adapter, opts, out)


@main.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--url", default=None, help="ws:// URL [default: from server.host/ws_port].")
@click.option("--token", envvar="ODDSFEED_TOKEN", help="A JWT (or ODDSFEED_TOKEN).")
@click.option("--seconds", type=float, default=None, help="Stop after this long.")
@click.pass_obj
def watch(cli: _Cli, ids: tuple[str, ...], url: str | None, token: str | None,
          seconds: float | None) -> None:
    """A live terminal view of MARKET or EVENT ids (needs the oddsfeed-client package)."""
    try:
        from oddsfeed_client.watch import (  # type: ignore[import-not-found,unused-ignore]
            watch as run_watch,
        )
    except ImportError as exc:  # pragma: no cover - the SDK is a separate package
        raise click.ClickException("install the SDK: pip install -e clients/python") from exc
    settings = _settings(cli, {})
    target = url or f"ws://{settings.server.host}:{settings.server.ws_port}/ws"
    with contextlib.suppress(KeyboardInterrupt):
        run_async(run_watch(target, list(ids), token=token, seconds=seconds))


@main.command()
@click.option("--scope", "scopes", default="odds:read", show_default=True,
              help="Space-separated scopes: odds:read odds:write bets:validate.")
@click.option("--ttl", "ttl_s", type=int, default=3600, show_default=True, help="Seconds.")
@click.option("--sub", default="trader", show_default=True, help="The token's subject.")
@click.pass_obj
def token(cli: _Cli, scopes: str, ttl_s: int, sub: str) -> None:
    """Mint an HS256 JWT from the configured auth.hs256_secret."""
    from oddsfeed.auth import Authenticator, AuthError

    settings = _settings(cli, {})
    try:
        click.echo(Authenticator(settings.auth).mint(sub, scopes.split(), ttl_s=ttl_s,
                                                     now_s=int(time.time())))
    except AuthError as exc:
        raise click.ClickException(str(exc)) from exc


@main.command()
@click.option("--port", type=int, default=0, show_default=True, help="0: any free port.")
@click.option("--unix-socket", is_flag=True, help="Listen on a unix socket instead of TCP.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--persist", is_flag=True, help="Keep data (RDB + AOF) in --data-dir.")
@click.option("--cluster", "cluster_nodes", type=int, default=0, help="Start an N-node cluster.")
@click.pass_obj
def valkey(
    cli: _Cli,
    port: int,
    unix_socket: bool,
    data_dir: Path | None,
    persist: bool,
    cluster_nodes: int,
) -> None:
    """Run an embedded Valkey in the foreground and print its url (for development)."""
    from oddsfeed.embedded import EmbeddedCluster, EmbeddedServerError, EmbeddedValkey

    _settings(cli, {})
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    server: EmbeddedValkey | EmbeddedCluster
    if cluster_nodes:
        server = EmbeddedCluster(n_primaries=cluster_nodes)
    else:
        server = EmbeddedValkey(
            port=port, unix_socket=unix_socket, data_dir=data_dir, persistence=persist
        )
    try:
        server.start()
    except EmbeddedServerError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        urls = server.urls if isinstance(server, EmbeddedCluster) else [server.url]
        for url in urls:
            click.echo(url)
        sys.stdout.flush()
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()


@main.command("show-config")
@click.pass_obj
def show_config(cli: _Cli) -> None:
    """Print the effective settings as JSON (secrets masked)."""
    settings = _settings(cli, {})
    data = settings.model_dump(mode="json")
    if data["auth"]["hs256_secret"]:
        data["auth"]["hs256_secret"] = MASK
    data["redis"]["url"] = redact_url(data["redis"]["url"])
    click.echo(json.dumps(data, indent=2))
