"""The one redaction of credentials in text that may be printed or logged (URL passwords
and user names, e.g. ``redis://user:secret@host``). Pure: no I/O."""

from __future__ import annotations

import re

__all__ = ["MASK", "redact_text", "redact_url"]

MASK = "***"
# scheme://userinfo@: the userinfo may hold ':', '/' and even an unencoded '@', so it runs
# greedily to the last '@' of the whitespace-free token.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"<>]+)@")


def redact_url(url: str) -> str:
    """``url`` with any user name and password replaced by ``***``
    (``redis://:pw@h:6379/0`` -> ``redis://***@h:6379/0``); other text is kept."""
    return redact_text(url)


def redact_text(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    if "@" not in text:
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
