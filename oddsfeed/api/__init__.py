"""The HTTP API adapter (aiohttp): protocol.md sections 3-5 and the demo page."""
