"""The published body of a one-price delta, built by its short path in published.lua, has
the same bytes as the general path's, for any market id, selection id and price."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio

from oddsfeed.core.prices import MAX_PRICE, MIN_PRICE

PUBLISHED = Path(__file__).resolve().parents[2] / "oddsfeed" / "store" / "published.lua"
SHORT = "  local one = pub_one_price(delta)\n"

# Both paths side by side: the general one is published.lua with its short path left out.
CHECK = r"""
local bad = {}
local n = tonumber(ARGV[1])
for i = 1, n do
  local sid = string.rep('s', i % 40 + 1) .. i
  local mid = string.rep('m', (i * 7) % 300 + 1)
  local price = tonumber(ARGV[2]) + (i * 7919) % (tonumber(ARGV[3]) - tonumber(ARGV[2]) + 1)
  local function delta()
    return {op = 'delta', m = mid, e = '0123456789abcdef', v = i * 1000003,
            base = i * 1000003 - 1, ts = 1.7e18 + i, t = 1.7e15 + i,
            sel = {[sid] = {price = price}}}
  end
  local fast, general = published_delta(delta()), general_delta(delta())
  if fast ~= general then bad[#bad + 1] = sid .. ' ' .. price end
end
return bad
"""


def _general(text: str) -> str:
    """published.lua with the short path off, its function renamed general_delta."""
    assert text.count(SHORT) == 1
    off = text.replace(SHORT, "  local one = nil\n")
    assert off.count("local function published_delta(") == 1
    return off.replace("local function published_delta(", "local function general_delta(")


async def test_one_price_short_path_matches_the_general_path(
        redis_client: redis.asyncio.Redis) -> None:
    """Every one-price delta of 3,000 (ids of 1-340 bytes, prices from min to max) gets the
    general path's exact bytes from the short path."""
    text = PUBLISHED.read_text()
    bad = await redis_client.eval(text + _general(text) + CHECK, 0, 3000, MIN_PRICE, MAX_PRICE)
    assert bad == []


async def test_the_short_path_is_taken(redis_client: redis.asyncio.Redis) -> None:
    """The short path answers a one-price delta and declines any other (nil: the general
    path builds it)."""
    probe = r"""
local d = {op = 'delta', m = 'm', e = 'e', v = 2, base = 1, ts = 3, t = 4}
d.sel = {h = {price = 15000}}
local one = pub_one_price(d) ~= nil
d.sel = {h = {price = 15000}, a = {price = 16000}}
local two = pub_one_price(d) ~= nil
d.sel = {h = {price = 15000, status = 'active'}}
local field = pub_one_price(d) ~= nil
d.sel = {h = {price = 15000}}
d.status = 'suspended'
local status = pub_one_price(d) ~= nil
return {one and 1 or 0, two and 1 or 0, field and 1 or 0, status and 1 or 0}
"""
    assert await redis_client.eval(PUBLISHED.read_text() + probe, 0) == [1, 0, 0, 0]
