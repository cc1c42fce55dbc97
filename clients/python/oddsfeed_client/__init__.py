"""oddsfeed-client: an asyncio SDK for the oddsfeed WebSocket protocol.

    async with OddsFeedClient("ws://127.0.0.1:8765/ws", token=tok) as feed:
        await feed.subscribe(events=["ev1"])
        async for change in feed.changes():
            print(change.market.id, change.market.version)

The client keeps a local mirror by the protocol's client rule (a gap or a new epoch ->
re-subscribe with ``from``), reconnects with jittered backoff and resumes every market
from its (epoch, version) position.
"""

from .client import Change, OddsFeedClient, ValidationError

__all__ = ["Change", "OddsFeedClient", "ValidationError"]
