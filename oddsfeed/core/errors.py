"""The one error tree of oddsfeed; who is at fault decides the class. No I/O here."""

from __future__ import annotations

from .redact import redact_text


class OddsfeedError(Exception):
    """Base of every error oddsfeed raises on purpose."""


class InvalidInput(OddsfeedError):
    """A peer sent a value we refuse (bad price, bad id, bad field); nothing was changed.

    ``path`` names the offending field (``selections.home.price``) when there is one.
    """

    def __init__(self, message: str, *, path: str = "") -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)

    def at(self, prefix: str) -> InvalidInput:
        """Return the same error with ``prefix`` put in front of its path."""
        path = f"{prefix}.{self.path}" if self.path else prefix
        return InvalidInput(self.message, path=path)


class PriceError(InvalidInput):
    """A price input that is not a valid odds value in any accepted format."""


class ProtocolViolation(OddsfeedError):
    """A WebSocket client broke the protocol; ``code`` is the wire error code and
    ``close_code`` the close code to use when the connection must end (0: keep it open)."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "bad_request",
        close_code: int = 0,
        request_id: int | str | None = None,
    ) -> None:
        self.code = code
        self.close_code = close_code
        self.request_id = request_id
        self.message = message
        super().__init__(message)


class ProviderDataError(OddsfeedError):
    """A feed provider sent data we cannot use; carries the provider and a raw excerpt."""

    def __init__(self, message: str, *, provider: str, raw: object = None) -> None:
        self.provider = provider
        text = raw if isinstance(raw, str) else repr(raw)
        self.raw = text[:500] if raw is not None else ""
        super().__init__(message)


class StoreError(OddsfeedError):
    """The store refused or failed a call (unreachable, script error); its text never
    carries the store URL's credentials, since it is logged and may reach a client."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))
