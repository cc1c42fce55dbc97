"""Where the apply script's time goes: Valkey's own time per apply (``INFO commandstats``)
of copies of the apply script that return early after each stage of a one-price change,
called as the store calls it on a single server (batches of 64 items, short replies), each
variant interleaved with the others in rounds. A stage's cost is the difference between a
variant and the one before it.

With ``BENCH_AB_TREE=DIR`` the whole script of that checkout runs in the same rounds too
(the last row, ``base``), for a before -> after of the total.

    [BENCH_AB_TREE=DIR] python -m bench.apply_stages [--quick] [--json PATH]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store

LUA = Path(__file__).resolve().parent.parent / "oddsfeed" / "store"
EARLY = "\ndo return 0 end\n"

# (stage, the line of apply.lua after which its variant returns); None: the whole script.
STAGES: list[tuple[str, str | None]] = [
    ("batch loop, helpers defined", "local function apply_market(KEYS, ARGV)"),
    ("decode the update, GET", "local raw = redis.call('GET', KEYS[1])"),
    ("HMGET the meta hash", "local bs_gen = tonumber(bs[1]) or 0"),
    ("meta decode, closures", "local writer = upd.source or ''"),
    ("decode the state", "local state = cmsgpack.unpack(raw)"),
    ("merge", "-- diff (book.diff)"),
    ("diff", "local locks_after = locks_before"),
    ("encode the state", "\nlocal packed = cmsgpack.pack(state)"),
    ("SET", "\nredis.call('SET', KEYS[1], packed)"),
    ("encode the delta", "local payload = cmsgpack.pack(delta)"),
    ("XADD", "           payload, 'w', writer)"),
    ("build the published body", "if delta then payload = published_delta(delta) end"),
    ("SPUBLISH and the reply", None),
]


def variants(text: str | None = None) -> list[tuple[str, str]]:
    """The script (published.lua then apply.lua) cut after each stage, in stage order."""
    apply = text if text is not None else (LUA / "apply.lua").read_text()
    head = (LUA / "published.lua").read_text()
    out = []
    for name, anchor in STAGES:
        if anchor is None:
            out.append((name, head + apply))
            continue
        if apply.count(anchor) != 1:
            raise SystemExit(f"anchor not found once in apply.lua: {anchor!r}")
        out.append((name, head + apply.replace(anchor, anchor + EARLY)))
    return out


async def _run(url: str, rounds: int, n: int) -> list[dict[str, Any]]:
    store = await Store.connect(url, auto_pipeline=False)
    client = store.client
    mids = [f"st{k}" for k in range(20)]
    for mid in mids:
        await store.apply(MarketUpdate(
            market=mid, create=True, fields={"event": "e", "sport": "s", "name": mid},
            selections={"h": {"name": "H", "price": 20000}, "a": {"name": "A", "price": 30000}}))
    scripts = variants()
    tree = os.environ.get("BENCH_AB_TREE")
    if tree:
        lua = Path(tree, "oddsfeed", "store")
        scripts.append(("base: the whole script", "".join(
            (lua / f).read_text() for f in ("published.lua", "apply.lua"))))
    shas = [(name, await client.script_load(text)) for name, text in scripts]
    got: dict[str, list[float]] = {name: [] for name, _ in shas}
    i = 0
    for _ in range(rounds):
        for name, sha in shas:
            await client.config_resetstat()
            for _batch in range(n // 64):
                keys: list[str] = []
                args: list[Any] = []
                for _ in range(64):
                    i += 1
                    k, a = store._apply_args(MarketUpdate(
                        market=mids[i % len(mids)],
                        selections={"h": {"price": 11000 + i % 80000}}), None, None, short=True)
                    keys += k
                    args += a
                await client.evalsha(sha, len(keys), *keys, *args)
            stats = (await client.info("commandstats"))["cmdstat_evalsha"]
            got[name].append(float(stats["usec"]) / (int(stats["calls"]) * 64))
    await store.close()
    rows, before = [], 0.0
    for name, us in got.items():
        med = sorted(us)[len(us) // 2]
        if name.startswith("base"):
            before = med
        rows.append({"stage": name, "usec_per_apply_median": round(med, 2),
                     "stage_usec": round(med - before, 2),
                     "runs": [round(u, 2) for u in us]})
        print(f"  {name:30s} {med:6.2f} us (+{med - before:5.2f})  {rows[-1]['runs']}",
              flush=True)
        before = med
    return rows


def run(quick: bool) -> dict[str, Any]:
    """Every variant, interleaved; returns the rows for the report."""
    import uvloop

    from .common import environment

    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        rows = uvloop.run(_run(vk.url, 3 if quick else 7, 64 * 40 if quick else 64 * 120))
    return {"scenario": "apply_stages", "env": env, "rows": rows,
            "columns": ["stage", "usec_per_apply_median", "stage_usec", "runs"]}


def main() -> None:
    from .common import cli

    cli("apply_stages", run, __doc__)


if __name__ == "__main__":
    main()
