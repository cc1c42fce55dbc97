"""The ETag of a market answer: ``"<epoch>:<version>"`` (protocol.md section 3), which
If-Match takes back."""

from __future__ import annotations

__all__ = ["etag"]


def etag(epoch: object, version: object) -> str:
    """The strong ETag naming one version of one market epoch."""
    return f'"{epoch}:{version}"'
