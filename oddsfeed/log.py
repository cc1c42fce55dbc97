"""Logging setup: one structlog configuration for our logs and stdlib (library) logs alike.

Only the CLI calls configure_logging; adapters get loggers with get_logger and log
key-value events. The core never logs.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from oddsfeed.core.redact import redact_text

__all__ = ["configure_logging", "get_logger", "redact_credentials"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# Marks the handler we installed so a second configure_logging replaces it.
_HANDLER_NAME = "oddsfeed"


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    stream_is_tty: bool | None = None,
    *,
    stream: IO[str] | None = None,
) -> None:
    """Configure structlog and stdlib logging; call once at start-up (calling again
    replaces the previous setup).

    ``fmt`` is ``console`` (human-readable), ``json`` (one object a line) or ``auto``:
    console when ``stream_is_tty``, else JSON. Both carry the same keys: ``timestamp``
    (ISO 8601, UTC), ``level``, ``event``, ``logger`` and the event's own fields. Logs go
    to ``stream`` (default stderr). Raises ValueError for an unknown level or format.
    """
    level_no = _LEVELS.get(level.lower())
    if level_no is None:
        raise ValueError(f"unknown log level: {level!r}")
    out = stream if stream is not None else sys.stderr
    if stream_is_tty is None:
        stream_is_tty = out.isatty()
    if fmt == "auto":
        fmt = "console" if stream_is_tty else "json"
    renderer: Processor
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=stream_is_tty)
    elif fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        raise ValueError(f"unknown log format: {fmt!r}")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_credentials,
    ]
    final: list[Processor] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        # No locals in tracebacks: they may hold secrets (tokens, the HS256 key).
        final.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
    final.append(renderer)

    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level_no),
        # Not cached, so structlog.testing.capture_logs() works after configuration.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=final,
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)


def redact_credentials(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """A structlog processor: URL credentials in any string value (the event included)
    become ``***``, whoever logged them (our code or a library through stdlib logging)."""
    for key, value in event.items():
        if isinstance(value, str) and "@" in value:
            event[key] = redact_text(value)
    return event


def get_logger(name: str, **initial: Any) -> FilteringBoundLogger:
    """Return a structlog logger named ``name`` (shown as ``logger``) bound to ``initial``."""
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial)
    return logger
