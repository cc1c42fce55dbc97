"""The one parser of JSON request bodies: bytes in, a JSON value or InvalidInput out.

It knows nothing of aiohttp (any HTTP endpoint, the ingest push endpoint included, can call
it) and never lets a hostile body reach the rest of the server as anything but a clean
error: no RecursionError, no lone surrogate, no NaN, no integer too long to convert.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from ..core.errors import InvalidInput

__all__ = ["MAX_JSON_DEPTH", "check_json", "parse_json"]

# The deepest legitimate body (POST /v1/odds: updates[].selections.{id}.price{}) nests 6
# containers; 32 leaves room and stays far below Python's recursion limit, which both the
# parser and every later walk (pydantic, json.dumps of an echo) would otherwise hit.
MAX_JSON_DEPTH = 32
# orjson reads an integer outside [-2^63, 2^64) as a float, where json keeps it exact: a
# body with a run of 19 digits goes to json.
_LONG_DIGITS = b"0" * 19
# One pass over the body maps each byte to its class for _plainly_fine's scans (the same
# length, so a run of digits stays a run and a backslash stays before its "u"): digits to
# "0", "[" and "{" to "[", NUL and 0xED to "!", "\\" and "u" to themselves, the rest to ".".
_CLASSES = bytes(
    ord("0") if 0x30 <= b <= 0x39 else ord("[") if b in b"[{" else ord("!") if b in (0, 0xED)
    else b if b in b"\\u" else ord(".") for b in range(256))


def parse_json(raw: bytes | str, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``raw``; raises InvalidInput (nothing else) when it is not valid
    UTF-8 JSON, nests containers deeper than ``max_depth``, carries NaN/Infinity, or holds
    a string (or key) with a lone surrogate. Call it on every request body before use."""
    plain = False
    if isinstance(raw, bytes):
        classes = raw.translate(_CLASSES)
        plain = _plainly_fine(classes, max_depth)
        if plain and _LONG_DIGITS not in classes:
            # A speed hack: orjson parses what json parses to the same value, and refuses
            # the rest (NaN and Infinity included); json decides, and words, every refusal.
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                pass
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInput(f"nested deeper than {max_depth} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        # ValueError covers bad syntax, bad UTF-8 and integers past int's digit limit.
        raise InvalidInput(f"not valid json: {_reason(exc)}") from None
    if not plain:
        check_json(value, max_depth=max_depth)
    return value


def _plainly_fine(classes: bytes, max_depth: int) -> bool:
    """True when the body (bytes, mapped to ``_CLASSES``) alone shows what check_json would
    find: UTF-8 (JSON text in UTF-16 or UTF-32 always holds a NUL) with no escape (no \\u,
    so no escaped surrogate) and no 0xED byte (the lead byte of every UTF-8-encoded
    surrogate, which the parser's surrogatepass would let in), and at most ``max_depth``
    brackets (so no deeper nesting, whatever the strings hold)."""
    return (b"!" not in classes and b"\\u" not in classes
            and classes.count(b"[") <= max_depth)


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise InvalidInput if an already-decoded JSON ``value`` nests deeper than
    ``max_depth`` or holds a string that is not valid Unicode (a lone surrogate). Walks
    iteratively, so any depth is safe to check."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            _check_text(node, path)
            continue
        if not isinstance(node, (dict, list)):
            continue
        if depth > max_depth:
            raise InvalidInput(f"nested deeper than {max_depth} levels", path=path)
        if isinstance(node, dict):
            for key, child in node.items():
                where = f"{path}.{key}" if path else str(key)
                _check_text(key, path)
                stack.append((child, depth + 1, where))
        else:
            for i, child in enumerate(node):
                stack.append((child, depth + 1, f"{path}.{i}" if path else str(i)))


def _check_text(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("lone surrogate in a string", path=_printable(path)) from None


def _printable(path: str) -> str:
    # The path itself may carry the surrogate: it goes back to the client in the answer.
    return path.encode("utf-8", "replace").decode("utf-8")


def _reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg.lower()} at offset {exc.pos}"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid utf-8 at offset {exc.start}"
    text = str(exc)
    if "digits" in text:
        return "integer too long"
    return text[:80].lower()


def _no_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259) though Python's parser takes them.
    raise ValueError(f"{name} is not valid json")
