"""The feed adapters by name: each one's options (their defaults are defined here and
nowhere else), the provider whose mapping it uses, what it needs before it starts, and its
runner. `oddsfeed ingest` / `oddsfeed record` build their options, help and checks from
:data:`ADAPTERS`, and :func:`oddsfeed_ingest.main.run_adapter` runs an entry: adding an adapter is
one entry here plus its provider module.

This module imports only the standard library at load time (the CLI reads it for every
command); each runner imports its provider module when it runs.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oddsfeed.core.model import MarketUpdate
    from oddsfeed.settings import Settings

    from .normalised import FeedMapping
    from .runner import FeedRunner

__all__ = ["ADAPTERS", "COMMON_OPTIONS", "Adapter", "AdapterRun", "Option", "Recorder",
           "cli_options", "setting_overrides"]

Recorder = Callable[[str, Any], None]


@dataclass(frozen=True, slots=True)
class Option:
    """One adapter option; ``name`` is its key in the options dict (``--name-with-dashes``
    on the command line)."""

    name: str
    help: str
    default: Any = None
    kind: type = str  # str, int, float, bool (a flag) or Path (a file)
    choices: tuple[str, ...] = ()
    multiple: bool = False
    envvar: str | None = None
    metavar: str | None = None
    # Read into this settings field (a secret or the store URL), not into the options.
    setting: str | None = None
    # A falsy value (0, "", empty) means "not given" and takes the default.
    falsy_is_unset: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True, slots=True)
class AdapterRun:
    """What a runner gets: the feed runner to submit through and the resolved options."""

    runner: FeedRunner
    opts: dict[str, Any]
    settings: Settings
    stop: asyncio.Event
    recorder: Recorder | None
    mapping: FeedMapping  # the provider's section of the mappings file
    mappings: dict[str, FeedMapping]  # every provider's (replay mixes providers)


@dataclass(frozen=True, slots=True)
class Adapter:
    """One feed adapter."""

    name: str
    doc: str  # its paragraph of `oddsfeed ingest --help`
    run: Callable[[AdapterRun], Awaitable[None]]
    options: tuple[Option, ...] = ()
    provider: str = ""  # its section of the mappings file; default: its name
    required: tuple[str, ...] = ()  # option names it cannot start without
    recordable: bool = True  # `oddsfeed record` can write its raw messages
    needs_auth: bool = False  # verifies tokens: the auth settings must be usable
    watch: bool = True  # suspends the markets of a silent feed
    store_retries: int = 6
    # Fails early (ValueError) on a bad input file, before any connection is made.
    preflight: Callable[[dict[str, Any]], None] | None = None

    @property
    def mapping_name(self) -> str:
        return self.provider or self.name

    def resolve(self, opts: dict[str, Any]) -> dict[str, Any]:
        """``opts`` with every option of this adapter given a value (its default where it
        is absent, None, or falsy and ``falsy_is_unset``)."""
        out = dict(opts)
        for opt in (*COMMON_OPTIONS, *self.options):
            if opt.setting is not None:
                continue
            value = out.get(opt.name)
            if value is None or (not value and opt.falsy_is_unset
                                 and opt.default is not None):
                out[opt.name] = opt.default
        return out

    def check(self, opts: dict[str, Any], *, recording: bool) -> dict[str, Any]:
        """The resolved options; raises ValueError naming what is missing or wrong."""
        resolved = self.resolve(opts)
        by_name = {o.name: o for o in self.options}
        for name in self.required:
            if not resolved.get(name):
                opt = by_name[name]
                hint = f" {opt.metavar}" if opt.metavar else ""
                hint += f" (or {opt.envvar})" if opt.envvar else ""
                raise ValueError(f"{self.name} needs {opt.flag}{hint}")
        if recording and not self.recordable:
            raise ValueError(f"{self.name} messages cannot be recorded for replay")
        if self.preflight is not None:
            self.preflight(resolved)
        return resolved


# ---- options ---------------------------------------------------------------------------

COMMON_OPTIONS = (
    Option("feed_id", "Names the source.", "1"),
    Option("redis_url", "Overrides redis.url.", setting="redis.url"),
    Option("metrics_port", "Serve /metrics on this port (0: off).", 0, int),
    Option("priority", "The feed's priority on its markets: 0 is a primary; a backup (1, "
           "2, ...) applies only while every lower number is silent past the staleness.",
           0, int),
)
BOOKMAKER = Option("bookmaker", "which bookmaker's odds.", "")
ODDS_FORMAT = Option("odds_format", "the provider's odds format.", "decimal",
                     choices=("decimal", "fractional", "american", "hk", "malay", "indo"))


def cli_options() -> list[tuple[Option, tuple[str, ...]]]:
    """Every option once, with the adapters using it (empty: every adapter), in help order."""
    seen: dict[str, tuple[Option, list[str]]] = {o.name: (o, []) for o in COMMON_OPTIONS}
    for adapter in ADAPTERS.values():
        for opt in adapter.options:
            seen.setdefault(opt.name, (opt, []))[1].append(adapter.name)
    return [(opt, tuple(users)) for opt, users in seen.values()]


def setting_overrides(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop the options that are settings (the store URL, provider secrets) out of ``opts``
    as settings overrides."""
    return {opt.setting: opts.pop(opt.name, None) for opt, _ in cli_options()
            if opt.setting is not None}


# ---- runners ---------------------------------------------------------------------------

class _SubmitAll:
    """The simulator's store: records each update (when recording) and submits it."""

    def __init__(self, runner: FeedRunner, recorder: Recorder | None) -> None:
        self.runner, self.recorder = runner, recorder

    async def apply(self, update: MarketUpdate) -> Any:
        if self.recorder is not None:
            from .normalised import to_message

            self.recorder("simulator", to_message(update))
        return await self.runner.submit(update)

    async def apply_many(self, updates: Sequence[MarketUpdate]) -> list[Any]:
        if self.recorder is not None:
            from .normalised import to_message

            for u in updates:
                self.recorder("simulator", to_message(u))
        return await self.runner.submit_many(updates)


async def _simulator(run: AdapterRun) -> None:
    from oddsfeed.clock import now_ms

    from .simulator import SimulatorConfig, run_simulator

    opts, demo = run.opts, run.settings.demo
    events, seed = opts.get("events"), opts.get("seed")
    cfg = SimulatorConfig(events=int(events if events is not None else demo.events),
                          seed=int(seed if seed is not None else demo.seed),
                          rate_per_s=float(opts.get("rate") or demo.rate_per_s))
    await run_simulator(_SubmitAll(run.runner, run.recorder), cfg, stop=run.stop,
                        start_ms=now_ms(), count=False)


async def _replay(run: AdapterRun) -> None:
    from .replay import Normalizer, replay
    from .runner import Lanes

    opts = run.opts
    normalizer = Normalizer(run.mappings, bookmaker=opts["bookmaker"],
                            odds_format=opts["odds_format"])
    lanes = Lanes(run.runner.submit_many, lanes=int(opts["lanes"]))
    try:
        with Path(opts["file"]).open(encoding="utf-8") as fh:  # noqa: ASYNC230 - read lazily, line by line
            await replay(fh, lanes.put, run.runner.bad, speed=float(opts["speed"]),
                         normalizer=normalizer, stop=run.stop)
    finally:
        await lanes.close()


async def _http_poll(run: AdapterRun) -> None:
    from oddsfeed.clock import now_ms
    from oddsfeed.core.errors import ProviderDataError

    from .oddsapi import Poller, normalize_event

    runner, opts, recorder = run.runner, run.opts, run.recorder
    api_key = run.settings.ingest.api_key.get_secret_value()
    bookmaker, fmt = opts["bookmaker"], opts["odds_format"]
    # A 304 means "the same body as the last 200": only that body's markets are alive, so
    # an event that left the feed goes stale even while the provider answers 304.
    last_body: set[str] = set()

    async def on_events(events: list[Any]) -> None:
        now = now_ms()
        updates: list[MarketUpdate] = []
        for ev in events:
            if recorder:
                recorder("oddsapi", ev)
            try:
                updates += normalize_event(ev, bookmaker=bookmaker, odds_format=fmt,
                                           now_ms=now, mapping=run.mapping)
            except ProviderDataError as exc:
                runner.bad(exc, ev)
        await runner.submit_many(updates)  # one poll: pipelined, same outcomes as one by one
        last_body.clear()
        last_body.update(u.market for u in updates)

    async def on_not_modified() -> None:
        await runner.alive(last_body)

    poller = Poller(str(opts["url"]), on_events, interval_s=float(opts["interval"]),
                    timeout_s=float(opts["timeout"]),
                    params={"apiKey": api_key} if api_key else {},
                    on_not_modified=on_not_modified, on_bad=runner.bad)
    await poller.run(run.stop)


def _stream_login(settings: Settings) -> dict[str, Any] | None:
    """The stream's ``authentication`` fields (appKey, session), None when neither is set."""
    app_key = settings.ingest.app_key.get_secret_value()
    session = settings.ingest.session.get_secret_value()
    if not app_key and not session:
        return None
    return {"appKey": app_key, "session": session}


async def _stream(run: AdapterRun) -> None:
    from .betfair import StreamState
    from .betfair_stream import run_stream

    runner, recorder = run.runner, run.recorder
    state = StreamState(mapping=run.mapping)

    async def on_updates(updates: list[MarketUpdate]) -> None:
        await runner.submit_many(updates)  # pipelined, same outcomes as one by one

    await run_stream(str(run.opts["address"]), state, on_updates, runner.bad, stop=run.stop,
                     market_filter=json.loads(run.opts["filter"]),
                     authentication=_stream_login(run.settings),
                     keep_trying=bool(run.opts.get("keep_trying")),
                     on_alive=runner.alive, on_lag=runner.lagging,
                     on_raw=(lambda m: recorder("betfair", m)) if recorder else None)


async def _push(run: AdapterRun) -> None:
    import structlog
    from aiohttp import web

    from oddsfeed.auth import Authenticator

    from .push import build_push_app

    settings, port = run.settings, int(run.opts["port"])
    app = build_push_app(run.runner, Authenticator(settings.auth),
                         max_body_bytes=settings.api.max_body_bytes, mapping=run.mapping,
                         recorder=run.recorder)
    app_runner = web.AppRunner(app, access_log=None)
    await app_runner.setup()
    await web.TCPSite(app_runner, settings.server.host, port).start()
    structlog.get_logger("oddsfeed.ingest").info(
        "push endpoint ready", url=f"http://{settings.server.host}:{port}/v1/push")
    try:
        await run.stop.wait()
    finally:
        await app_runner.cleanup()


async def _uof(run: AdapterRun) -> None:
    from .uof_amqp import run_uof_adapter

    await run_uof_adapter(run.runner, run.opts, run.stop)


def _uof_preflight(opts: dict[str, Any]) -> None:
    from .uof_mapping import load_uof_mapping

    load_uof_mapping(Path(opts["uof_mapping"]))


# ---- the table -------------------------------------------------------------------------

ADAPTERS: dict[str, Adapter] = {a.name: a for a in (
    Adapter("simulator", "generated markets: --events, --seed, --rate; no credentials.",
            _simulator, (
                Option("events", "events (demo.events).", kind=int),
                Option("seed", "seed (demo.seed).", kind=int),
                Option("rate", "ticks per second.", kind=float),
            )),
    Adapter("replay", "a recording: --file, --speed, --lanes; no credentials.", _replay, (
        Option("file", "a .jsonl file.", kind=Path),
        Option("speed", "10 = ten times faster, 0 = as fast as possible.", 1.0, float,
               falsy_is_unset=False),
        Option("lanes", "markets applied concurrently (order kept per market).", 8, int),
        BOOKMAKER, ODDS_FORMAT,
    ), required=("file",), watch=False),
    Adapter("http-poll",
            "an Odds-API-v4-style URL: --url, --bookmaker, --odds-format, --interval, "
            "--timeout; the API key with --api-key (env ODDSFEED_INGEST__API_KEY), sent as "
            "the apiKey query parameter and masked in logs. A 304 keeps alive only the "
            "markets of the last 200 body.", _http_poll, (
                Option("url", "the odds API URL."),
                BOOKMAKER, ODDS_FORMAT,
                Option("interval", "seconds between polls.", 5.0, float),
                Option("timeout", "per-request timeout in seconds.", 10.0, float),
                Option("api_key", "the provider's API key, sent as the apiKey query parameter "
                       "(ingest.api_key, env ODDSFEED_INGEST__API_KEY); never printed.",
                       setting="ingest.api_key"),
            ), provider="oddsapi", required=("url",)),
    Adapter("stream",
            "an Exchange-Stream-style feed: --address, --filter; logs in with --app-key and "
            "--session (env ODDSFEED_INGEST__APP_KEY, ODDSFEED_INGEST__SESSION) before "
            "subscribing. Failures back off exponentially with jitter up to 30 s; a refused "
            "login (bad app key, invalid session) stops with an error unless --keep-trying.",
            _stream, (
                Option("address", "HOST:PORT (TCP), tls://HOST:PORT or a ws:// URL.",
                       metavar="HOST:PORT"),
                Option("filter", "the marketFilter as JSON.", "{}"),
                Option("app_key", "the application key sent in the login (ingest.app_key, "
                       "env ODDSFEED_INGEST__APP_KEY); never printed.",
                       setting="ingest.app_key"),
                Option("session", "the session token sent in the login (ingest.session, "
                       "env ODDSFEED_INGEST__SESSION); never printed.",
                       setting="ingest.session"),
                Option("keep_trying", "keep reconnecting (with backoff) after the provider "
                       "refuses the credentials, instead of stopping with an error.",
                       False, bool),
            ), provider="betfair", required=("address",)),
    Adapter("push",
            "POST /v1/push on --port; pushers need a bearer JWT with odds:write "
            "(auth.hs256_secret or auth.public_keys). Each token subject has its own seq "
            "ordering; an update not applied answers ok: false.", _push, (
                Option("port", "the port to listen on.", 8090, int),
            ), needs_auth=True,
            # It answers its pushers: a store outage is a 503 at once, not a wait.
            store_retries=1),
    Adapter("uof",
            "Sportradar-UOF-style XML over AMQP: --amqp-url (env ODDSFEED_UOF_AMQP_URL, "
            "credentials masked in logs), --exchange, --routing-key, --uof-mapping, "
            "--producer-timeout; see docs/uof.md.", _uof, (
                Option("amqp_url", "the broker URL, e.g. amqps://ACCESS_TOKEN:@HOST:5671/"
                       "%2Funifiedfeed%2FBOOKMAKER_ID (the access token is the user name, "
                       "/unifiedfeed/BOOKMAKER_ID the virtual host); never logged.",
                       envvar="ODDSFEED_UOF_AMQP_URL"),
                Option("exchange", "the topic exchange.", "unifiedfeed"),
                Option("routing_key", "a binding key, repeatable (default '#': every "
                       "message), e.g. 'hi.-.live.#' and '-.-.-.alive.#'.", ("#",),
                       multiple=True),
                Option("uof_mapping", "the mapping file (market id + specifiers -> our ids).",
                       "config/uof.toml", Path),
                Option("producer_timeout", "seconds without an alive before a producer is "
                       "down and its markets are suspended.", 20.0, float),
            ), required=("amqp_url",), recordable=False, preflight=_uof_preflight),
)}
