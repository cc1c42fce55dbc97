"""The UOF mapping file (config/uof.toml): which UOF market of which event goes to which of
our markets and selections, and the derived ids used where the file maps nothing."""

from __future__ import annotations

import re
import tomllib
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .normalised import safe_id

_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9_]+)\}")
log = structlog.get_logger("oddsfeed.ingest.uof")


class UofOutcome(BaseModel):
    """One outcome's mapping: our selection id, its name, and whether its line is the
    negated specifier (the away side of a home handicap)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    name: str = ""
    negate_point: bool = False


class UofMarketMapping(BaseModel):
    """How one UOF market id (any specifiers) becomes our market: ``id`` and ``name`` are
    templates with ``{event}`` (our event id), ``{market}`` and ``{<specifier>}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = "{event}:{market}{specifiers}"
    name: str = "market {market}"
    kind: str = ""
    groups: list[str] = Field(default_factory=lambda: ["all"])
    point: str = ""  # the specifier that is the selections' line (total, hcp)
    outcomes: dict[str, str | UofOutcome] = Field(default_factory=dict)


class UofEvent(BaseModel):
    """One event urn's mapping: our event id and sport."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = ""
    sport: str = ""


class UofMapping(BaseModel):
    """The UOF mapping file (config/uof.toml; data only), see docs/operations.md.

    ``markets`` maps a UOF market id to :class:`UofMarketMapping`; ``ids`` maps
    ``"<event urn>/<market id>"`` or ``"<event urn>/<market id>/<specifiers>"`` to our market
    id exactly (it wins over the template); ``events`` maps event urns. A market id not in
    ``markets`` is skipped and counted (``unmapped = "skip"``), or created with derived ids
    and names (``unmapped = "derive"``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    default_sport: str = "unknown"
    unmapped: Literal["skip", "derive"] = "skip"
    live_producers: list[str] = Field(default_factory=lambda: ["1"])
    events: dict[str, UofEvent] = Field(default_factory=dict)
    markets: dict[str, UofMarketMapping] = Field(default_factory=dict)
    ids: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_toml(cls, text: str) -> UofMapping:
        """The mapping in a mapping file's text; raises ValueError naming the bad key."""
        try:
            return cls.model_validate(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ValueError(f"bad uof mapping: {exc}") from None


def derived_id(raw: str) -> str:
    """``raw`` as one of our ids: unchanged when valid, else made safe with a hash of the raw
    text appended, so that ids differing only in unsafe characters (``6`` and ``6+``) stay
    distinct."""
    safe = safe_id(raw)
    if safe == raw:
        return raw
    return f"{safe[:119]}-{zlib.crc32(raw.encode()):08x}"


def fill_template(template: str, values: dict[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def parse_specifiers(text: str) -> dict[str, str]:
    """``"total=2.5|variant=x"`` -> ``{"total": "2.5", "variant": "x"}``; raises ValueError."""
    out: dict[str, str] = {}
    for part in filter(None, text.split("|")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise ValueError(f"bad specifier {part[:60]!r}")
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class Target:
    """Where one UOF market of one event goes in our store."""

    market: str
    event: str
    sport: str
    name: str
    kind: str
    groups: frozenset[str]
    point: float | None
    outcomes: dict[str, str | UofOutcome]


def load_uof_mapping(path: Path) -> UofMapping:
    """The mapping in ``path`` (derived ids when there is no file); raises ValueError."""
    if not path.is_file():
        log.warning("no uof mapping file: every market is skipped", path=str(path))
        return UofMapping()
    return UofMapping.from_toml(path.read_text(encoding="utf-8"))
