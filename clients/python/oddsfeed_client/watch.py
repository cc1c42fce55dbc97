"""`oddsfeed watch`: a live terminal view of markets (rich), built on the client."""

from __future__ import annotations

import asyncio
from typing import Any

from rich.live import Live
from rich.table import Table

from ._core.prices import to_float
from .client import OddsFeedClient


def render(client: OddsFeedClient, moves: dict[tuple[str, str], str]) -> Table:
    """The table of every mirrored market's selections with up/down marks."""
    table = Table(title=f"oddsfeed  (reconnects: {client.reconnects})", expand=True)
    for col in ("market", "status", "v", "selection", "price", ""):
        table.add_column(col)
    for mid in sorted(client.markets):
        m = client.markets[mid]
        status = m.status + (" IN PLAY" if m.in_play else "")
        for i, (sid, sel) in enumerate(sorted(m.selections.items())):
            mark = moves.get((mid, sid), "")
            style = {"▲": "green", "▼": "red"}.get(mark, "")
            table.add_row(m.name if i == 0 else "", status if i == 0 else "",
                          str(m.version) if i == 0 else "", sel.name,
                          f"[{style}]{to_float(sel.price):.2f}[/]" if style else
                          f"{to_float(sel.price):.2f}", mark)
    return table


async def watch(url: str, ids: list[str], *, token: str | None = None,
                seconds: float | None = None) -> None:
    """Show ``ids`` (markets or events) live until interrupted (or ``seconds`` elapsed)."""
    moves: dict[tuple[str, str], str] = {}
    async with OddsFeedClient(url, token=token, encoding="msgpack") as client:
        reply = await client.subscribe(markets=ids)
        missing = set(reply.get("missing", []))
        if missing:  # names that are not markets are tried as events
            client._want_markets.difference_update(missing)  # noqa: SLF001
            await client.subscribe(events=sorted(missing))

        def on_change(change: Any) -> None:
            if change.kind == "delta" and change.previous and change.market:
                for sid, sel in change.market.selections.items():
                    old = change.previous.selections.get(sid)
                    if old is not None and old.price != sel.price:
                        moves[(change.market_id, sid)] = "▲" if sel.price > old.price else "▼"

        client.on_change(on_change)
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds if seconds else None
        with Live(render(client, moves), refresh_per_second=4, screen=False) as live:
            while end is None or loop.time() < end:
                await asyncio.sleep(0.25)
                live.update(render(client, moves))
