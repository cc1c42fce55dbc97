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
import textwrap
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
    """The ADAPTER argument and every adapter's options, from the adapter registry."""
    from oddsfeed_ingest.registry import ADAPTERS, cli_options

    options = [click.argument("adapter", type=click.Choice(list(ADAPTERS)))]
    for opt, users in cli_options():
        kwargs: dict[str, Any] = {
            "help": (f"{'/'.join(users)}: " if users else "") + opt.help}
        if opt.kind is bool:
            kwargs["is_flag"] = True
        elif opt.choices:
            kwargs["type"] = click.Choice(opt.choices)
        elif opt.kind is Path:
            kwargs["type"] = click.Path(dir_okay=False)
        else:
            kwargs["type"] = opt.kind
        if opt.default is not None and opt.kind is not bool:
            kwargs["default"] = opt.default
            kwargs["show_default"] = opt.default != "" and not opt.multiple
        if opt.multiple:
            kwargs["multiple"] = True
        if opt.envvar:
            kwargs.update(envvar=opt.envvar, show_envvar=True)
        if opt.metavar:
            kwargs["metavar"] = opt.metavar
        options.append(click.option(opt.flag, **kwargs))
    for option in reversed(options):
        func = option(func)
    return func


def _ingest_help() -> str:
    """`oddsfeed ingest --help`: one paragraph per registered adapter."""
    from oddsfeed_ingest.registry import ADAPTERS

    lines = [f"Run one feed adapter ({', '.join(ADAPTERS)}) into the store.", "", "\b"]
    for adapter in ADAPTERS.values():
        text = textwrap.wrap(adapter.doc, 76)
        lines.append(f"{adapter.name:<10} {text[0]}")
        lines += [" " * 11 + line for line in text[1:]]
    lines += ["", "Secrets are never printed: show-config masks them."]
    return "\n".join(lines)


def _run_ingest(cli: _Cli, adapter: str, opts: dict[str, Any], out: Path | None) -> None:
    from oddsfeed.store import Store
    from oddsfeed_ingest.errors import ProviderRefused
    from oddsfeed_ingest.main import load_mappings, run_adapter
    from oddsfeed_ingest.registry import ADAPTERS, setting_overrides
    from oddsfeed_ingest.replay import Recorder

    spec = ADAPTERS[adapter]
    settings = _settings(cli, setting_overrides(opts))
    if spec.needs_auth:
        _check_auth(settings, demo=False)  # its endpoint verifies tokens like the API
    try:
        opts = spec.check(opts, recording=out is not None)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if out is None and not settings.redis.url:
        raise click.ClickException("ingest needs redis.url (ODDSFEED_REDIS__URL or --redis-url)")
    try:
        mappings = load_mappings(Path(settings.ingest.mapping_file))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

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
            store = await Store.connect(
                settings.redis.url, cluster=settings.redis.cluster,
                history_len=settings.redis.history_len,
                auto_pipeline=settings.redis.auto_pipeline,
                read_batches_in_flight=settings.redis.read_batches_in_flight)
        try:
            runner = await run_adapter(adapter, opts, store, settings, stop=stop,
                                       recorder=recorder, mappings=mappings)
            log.info("ingest finished", adapter=adapter, counts=runner.counts)
        except ProviderRefused as exc:
            raise click.ClickException(str(exc)) from None
        finally:
            if store is not None:
                await store.close()
            if fh is not None:
                fh.close()
        return 0

    sys.exit(run_async(main()))


@main.command(help=_ingest_help())
@_ingest_options
@click.pass_obj
def ingest(cli: _Cli, /, adapter: str, **opts: Any) -> None:
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
