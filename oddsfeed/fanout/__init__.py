"""The WebSocket fan-out tier: websockets on uvloop, protocol.md section 2."""

from .hub import Hub
from .server import FanoutServer, run_worker, serve_workers

__all__ = ["FanoutServer", "Hub", "run_worker", "serve_workers"]
