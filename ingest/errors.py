"""Errors every adapter may raise to the CLI."""

from __future__ import annotations

from oddsfeed.core.errors import OddsfeedError

__all__ = ["ProviderRefused"]


class ProviderRefused(OddsfeedError):
    """The provider refused our credentials for good: retrying would not help (and a
    provider may block an account that keeps trying), so the adapter stops with this."""
