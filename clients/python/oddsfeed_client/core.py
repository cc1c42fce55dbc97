"""The pure core the client decodes and applies messages with.

The client ships its own copy of oddsfeed's core (``oddsfeed_client._core``, built from the
same source). When the server package is installed in the same environment its core is used
instead, so that one process holds one set of core classes (a client's ``Market`` then
compares equal to the server's), the way websockets picks its C speedups when present.
"""

from __future__ import annotations

try:
    from oddsfeed.core import wire
    from oddsfeed.core.book import Applied, Delta, Duplicate, apply_delta
    from oddsfeed.core.model import Market
    from oddsfeed.core.prices import parse_price, to_float
except ImportError:
    from ._core import wire  # type: ignore[no-redef]
    from ._core.book import (  # type: ignore[assignment,no-redef]
        Applied,
        Delta,
        Duplicate,
        apply_delta,
    )
    from ._core.model import Market  # type: ignore[assignment,no-redef]
    from ._core.prices import parse_price, to_float  # type: ignore[no-redef]

__all__ = ["Applied", "Delta", "Duplicate", "Market", "apply_delta", "parse_price", "to_float",
           "wire"]
