"""Slow HTTP clients against one real worker with its default limits: how long N
partial-header connections stay open, and what connections past api.max_connections get.

    python -m bench.slowloris [--conns 500] [--extra 50]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.settings import load_settings
from oddsfeed.worker import Worker

SECRET = "bench-secret-0123456789-0123456789"


async def main(conns: int, extra: int) -> None:
    with EmbeddedValkey() as valkey:
        settings = load_settings(None, {}, {"redis.url": valkey.url, "server.ws_port": 0,
                                            "server.http_port": 0,
                                            "auth.hs256_secret": SECRET})
        async with Worker(settings, valkey.url, reuse_port=False) as w:
            api = settings.api
            started = time.monotonic()
            slow = []
            for _ in range(conns):
                reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
                writer.write(b"GET /v1/markets HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                slow.append((reader, writer))
            closed_at: list[float] = []

            async def until_closed(reader: asyncio.StreamReader) -> None:
                await reader.read()
                closed_at.append(time.monotonic() - started)

            waiting = [asyncio.create_task(until_closed(r)) for r, _ in slow]
            refused = 0
            if conns >= api.max_connections:
                for _ in range(extra):
                    reader, writer = await asyncio.open_connection("127.0.0.1", w.http_port)
                    refused += (await reader.read()).startswith(b"HTTP/1.1 503 ")
                    writer.close()
            await asyncio.wait_for(asyncio.gather(*waiting), api.header_timeout_s + 30)
            closed_at.sort()
            print(f"{conns} partial-header connections, api.header_timeout_s="
                  f"{api.header_timeout_s}: all closed; first after {closed_at[0]:.2f} s, "
                  f"last after {closed_at[-1]:.2f} s")
            if conns >= api.max_connections:
                print(f"{extra} connections past api.max_connections={api.max_connections}: "
                      f"{refused} answered 503 and closed")
            for _, writer in slow:
                writer.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conns", type=int, default=500)
    parser.add_argument("--extra", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.conns, args.extra))
