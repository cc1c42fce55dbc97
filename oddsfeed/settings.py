"""The one settings model and how TOML, environment and flags combine into it.

Pure: it never reads files, the environment or the clock; callers (the CLI) pass the
TOML text, an env mapping and overrides in. Every section forbids unknown keys so a typo
is a clear error naming the key, not a silently ignored setting.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from oddsfeed.core.errors import OddsfeedError

__all__ = [
    "ENV_PREFIX",
    "ApiSettings",
    "AuthSettings",
    "DemoSettings",
    "FanoutSettings",
    "IngestSettings",
    "LogSettings",
    "RedisSettings",
    "RiskSettings",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "load_settings",
]

ENV_PREFIX = "ODDSFEED_"
_ENV_SEP = "__"
_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class SettingsError(OddsfeedError):
    """The configuration is invalid; ``problems`` lists (key path, message) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RedisSettings(_Section):
    """Where market state lives."""

    url: str = ""  # empty: start an embedded Valkey (all-in-one `run` only)
    cluster: bool = False
    history_len: int = Field(1000, ge=500)  # protocol 1: keep at least 500 versions
    # Market reads, and separately applies, issued within one event-loop turn go to the
    # store as one pipeline per node; false: one round trip per call.
    auto_pipeline: bool = True
    # With auto_pipeline: how many market-read batches may be out at once (0: any number,
    # one per loop turn); while they are, new reads gather into the next batch.
    read_batches_in_flight: int = Field(1, ge=0)


class ServerSettings(_Section):
    """Listening sockets and process count."""

    host: str = "127.0.0.1"
    ws_port: int = Field(8765, ge=0, le=65535)  # 0: any free port
    http_port: int = Field(8080, ge=0, le=65535)
    # Where /metrics and /openapi.json are served. None (the default): on the API port, as
    # the wire contract lists /metrics there. A port: on admin_host:admin_port only, never on
    # the client-facing port (production: a loopback or private admin bind). 0: any free
    # port; with http_port 0 the admin port is any free port too, so several nodes on one
    # host (tests, a laptop) never fight over it.
    admin_host: str = "127.0.0.1"
    admin_port: int | None = Field(None, ge=0, le=65535)
    workers: int = Field(0, ge=0)  # 0: one per CPU
    # Young-generation GC threshold of a worker; 0 leaves Python's defaults (see
    # docs/performance.md: the default 700 makes full collections of every connection's
    # objects frequent, 50-100 ms pauses at 1,000 connections)
    gc_threshold: int = Field(10_000, ge=0)

    def worker_count(self, cpu_count: int | None) -> int:
        """Return how many worker processes to run given the machine's CPU count."""
        return self.workers or max(1, cpu_count or 1)


class FanoutSettings(_Section):
    """WebSocket fan-out limits and timers."""

    heartbeat_ms: int = Field(15000, gt=0)
    batch_window_ms: int = Field(2, ge=0)  # 0: send each delta at once
    # a busy worker widens the window of its busiest connections up to this (see
    # docs/protocol.md "Batching"); at or below batch_window_ms: no widening
    batch_window_max_ms: int = Field(20, ge=0)
    # batching (both windows) runs only while the worker's busy share is at least this (or
    # the node is behind the store); below it every message is written at once. 0: always
    batch_min_busy: float = Field(0.4, ge=0, le=1)
    max_inbound_bytes: int = Field(65536, gt=0)
    high_water_bytes: int = Field(1048576, gt=0)
    max_outbox_bytes: int = Field(8388608, gt=0)
    max_lag_s: float = Field(10.0, gt=0)
    max_connections: int = Field(20000, gt=0)
    # ids per connection: markets (the markets of subscribed events included) and events
    max_subscriptions: int = Field(10000, gt=0)
    # of those, markets without state and events without markets (each opens a store channel)
    max_missing_subscriptions: int = Field(100, ge=0)
    # open connections per worker from one peer address / under one token subject (HTTP 429
    # at the handshake past it); 0: no cap. Anonymous readers have no subject cap.
    max_connections_per_ip: int = Field(100, ge=0)
    max_connections_per_subject: int = Field(100, ge=0)
    rate_limit_per_s: float = Field(100.0, gt=0)
    rate_limit_burst: int = Field(200, gt=0)
    rate_limit_strikes: int = Field(5, gt=0)
    ip_connect_per_s: float = Field(50.0, gt=0)
    ping_interval_s: float = Field(20.0, gt=0)
    ping_timeout_s: float = Field(20.0, gt=0)


class ApiSettings(_Section):
    """HTTP API limits (docs/operations.md lists them with their defaults)."""

    max_body_bytes: int = Field(1048576, gt=0)
    cors_origins: list[str] = Field(default_factory=list)
    idempotency_ttl_s: int = Field(300, gt=0)
    # a connection must send a complete request head within this of connecting or of its
    # previous response (also the idle keep-alive timeout), else it is closed
    header_timeout_s: float = Field(10.0, gt=0)
    body_timeout_s: float = Field(30.0, gt=0)  # reading a whole request body, else 408
    max_connections: int = Field(1000, gt=0)  # open HTTP connections per worker; past it 503
    # bet-slip validations in progress per worker (an in-play one holds its request for the
    # bet delay); past it 503 with Retry-After
    max_validations: int = Field(256, gt=0)
    max_page_size: int = Field(1000, gt=0)  # GET /v1/markets: the largest (and default) limit


class RiskSettings(_Section):
    """Stale-bet risk signals (docs/operations.md: the memory bound)."""

    enabled: bool = True
    windows_s: list[int] = Field(default_factory=lambda: [60, 3600, 86400])
    buckets: int = Field(12, ge=1, le=1440)  # buckets per window: its time resolution
    max_accounts: int = Field(10_000, gt=0)  # accounts one bucket holds; more are not counted
    max_pending: int = Field(10_000, gt=0)  # slips waiting for the recorder; more are dropped
    history_scan: int = Field(200, gt=0)  # history entries read to date one stale leg
    # An accepted leg followed within this by a suspension or a shorter price counts as a
    # beat (0: off); each waits in the store's beat queue of at most max_due legs in
    # due_shards sorted sets (a full shard refuses new legs, counted); a worker takes up to
    # sweep_limit due legs per shard every sweep_ms.
    beat_window_ms: int = Field(10_000, ge=0, le=3_600_000)
    max_due: int = Field(100_000, gt=0)
    due_shards: int = Field(8, ge=1, le=1024)
    sweep_ms: int = Field(500, gt=0)
    sweep_limit: int = Field(1000, gt=0)
    # A score reaching this in a window raises one alert (log event risk_threshold_crossed,
    # and a POST to webhook_url when set) per crossing; 100: never (scores stay below).
    threshold: float = Field(50.0, gt=0, le=100)
    threshold_check_ms: int = Field(1000, gt=0)  # accounts are checked at most this often
    webhook_url: str = ""
    webhook_timeout_s: float = Field(2.0, gt=0)
    webhook_max_inflight: int = Field(4, gt=0)  # posts at once; a crossing past it is not posted
    # `oddsfeed run` only (the demo, with its published secret): simulated sharp and normal
    # bettors validate slips under their own subjects so the signals show.
    demo_bettors: bool = True
    demo_sharps: int = Field(3, ge=0, le=100)
    demo_normals: int = Field(20, ge=0, le=1000)
    # For measuring the recorder only (bench.risk_cost): which of its parts run. "offer":
    # batches are taken and dropped; "fold": also summed in memory; "writes": also written
    # (counts, beat queue) but never swept; "all": everything (the only setting for use).
    debug_parts: Literal["offer", "fold", "writes", "all"] = "all"

    @field_validator("windows_s")
    @classmethod
    def _windows(cls, value: list[int]) -> list[int]:
        if not value or any(w < 1 or w > 7 * 86400 for w in value) or len(set(value)) != len(value):
            raise ValueError(f"windows_s {value} must be distinct seconds in 1..604800")
        return value


class AuthSettings(_Section):
    """Who may read and write; see protocol section 5."""

    anonymous_read: bool = False
    hs256_secret: str = ""
    public_keys: list[str] = Field(default_factory=list)  # PEM text or file paths
    audience: str = ""
    issuer: str = ""
    # a token whose exp is further ahead than this is refused (401): a leaked token cannot
    # outlive it, and `oddsfeed token --ttl` cannot mint past it
    max_token_lifetime_s: int = Field(86_400, gt=0)


class IngestSettings(_Section):
    """Feed ingestion."""

    staleness_s: float = Field(30.0, gt=0)
    mapping_file: str = "config/mappings.toml"
    # Provider credentials; secrets: never shown. api_key: an HTTP poll's apiKey query
    # parameter; app_key and session: a stream's login (``authentication``).
    api_key: SecretStr = SecretStr("")
    app_key: SecretStr = SecretStr("")
    session: SecretStr = SecretStr("")


class DemoSettings(_Section):
    """The simulator feed of the all-in-one `run`."""

    events: int = Field(4, ge=0)
    seed: int = 1
    rate_per_s: float = Field(20.0, gt=0)


class LogSettings(_Section):
    """Log level and rendering."""

    level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    format: Literal["auto", "console", "json"] = "auto"

    @field_validator("level", "format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class Settings(_Section):
    """All of oddsfeed's settings; every field has a default."""

    redis: RedisSettings = Field(default_factory=RedisSettings)
    server: ServerSettings = Field(default_factory=ServerSettings)
    fanout: FanoutSettings = Field(default_factory=FanoutSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    demo: DemoSettings = Field(default_factory=DemoSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)


def load_settings(
    toml_text: str | None = None,
    env: Mapping[str, str] = _EMPTY,
    overrides: Mapping[str, Any] = _EMPTY,
) -> Settings:
    """Return the settings from TOML text, then env, then overrides (later wins).

    ``env`` keys ``ODDSFEED_<SECTION>__<KEY>`` (any case) set ``section.key``; other keys
    are ignored. Env values are strings that pydantic coerces; list fields take JSON
    (``["a","b"]``) or comma-separated text. ``overrides`` keys are dotted paths
    (``"server.ws_port"``); None values are skipped so unset CLI flags can be passed as is.
    Raises SettingsError naming every bad key path.
    """
    data: dict[str, Any] = {}
    if toml_text:
        try:
            data = tomllib.loads(toml_text)
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError([("", f"invalid toml: {exc}")]) from exc
    problems: list[tuple[str, str]] = []
    for key, raw in env.items():
        if not key.upper().startswith(ENV_PREFIX):
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        if _ENV_SEP not in rest:
            continue
        section, _, name = rest.partition(_ENV_SEP)
        path = f"{section}.{name}"
        try:
            value = _coerce_env(section, name, raw)
        except ValueError as exc:
            problems.append((path, f"{exc} (from {key})"))
            continue
        _set_path(data, path, value)
    for path, value in overrides.items():
        if value is None:
            continue
        section, _, name = path.partition(".")
        if isinstance(value, str):
            try:
                value = _coerce_env(section, name, value)
            except ValueError as exc:
                problems.append((path, str(exc)))
                continue
        _set_path(data, path, value)
    if problems:
        raise SettingsError(problems)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_problems(exc)) from None


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _is_list_field(section: str, name: str) -> bool:
    section_field = Settings.model_fields.get(section)
    if section_field is None or not isinstance(section_field.annotation, type):
        return False
    model = section_field.annotation
    if not issubclass(model, BaseModel):
        return False
    field = model.model_fields.get(name)
    return field is not None and typing.get_origin(field.annotation) is list


def _coerce_env(section: str, name: str, raw: str) -> Any:
    """Turn an env string into what pydantic should see: lists are parsed here, scalars
    are left as strings for pydantic's coercion."""
    if not _is_list_field(section, name):
        return raw
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid json list: {exc.msg}") from exc
        return value
    return [item.strip() for item in text.split(",") if item.strip()]


def _problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        message = message[:1].lower() + message[1:]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append((path, message))
    return problems
