"""The WebSocket fan-out tier: websockets on uvloop, protocol.md section 2."""

from .hub import Client, Hub
from .server import FanoutServer

__all__ = ["Client", "FanoutServer", "Hub"]
