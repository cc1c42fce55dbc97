"""What the apply script costs Valkey per update, this checkout's against another's
(``BENCH_AB_TREE``): Valkey's own time per call (``INFO commandstats``, evalsha
``usec_per_call``), one embedded server, both scripts interleaved in rounds.

Two update shapes: the fan-out bench's (one selection's price of a 2-selection market) and a
wider one (every field of a 6-selection market with names, prices and lines).

    BENCH_AB_TREE=DIR python -m bench.fanout.apply_cost [--quick] [--json PATH]
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

from oddsfeed.core.model import MarketUpdate
from oddsfeed.embedded import EmbeddedValkey
from oddsfeed.store import Store

from .harness import use_scripts_of

ROOT = str(Path(__file__).resolve().parents[2])
SELS = ["a", "b", "c", "d", "e", "f"]


def _update(shape: str, mid: str, i: int, rng: random.Random) -> MarketUpdate:
    if shape == "one price":
        return MarketUpdate(market=mid, selections={"h": {"price": 11000 + i % 80000}}, ts=i)
    return MarketUpdate(
        market=mid, ts=i, fields={"status": rng.choice(["open", "suspended"])},
        selections={s: {"price": rng.randint(10001, 300000), "name": f"Runner {s} {i % 7}",
                        "point": rng.choice([None, -1.5, 0.25, 2.0])} for s in SELS})


async def _create(store: Store, mid: str) -> None:
    await store.apply(MarketUpdate(
        market=mid, create=True, fields={"event": "e", "sport": "s", "name": mid},
        selections={"h": {"name": "H", "price": 20000},
                    **{s: {"name": s, "price": 20000} for s in SELS}}))


async def _usec_per_call(store: Store) -> tuple[int, float]:
    stats = await store.client.info("commandstats")
    row = stats.get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(row["calls"]), float(row["usec"])


async def _round(store: Store, shape: str, n: int, tag: str) -> float:
    rng = random.Random(3)
    mids = [f"{tag}{k}" for k in range(10)]
    for mid in mids:
        await _create(store, mid)
    await store.client.config_resetstat()
    for start in range(0, n, 100):
        await store.apply_many([_update(shape, mids[i % 10], i, rng)
                                for i in range(start, min(n, start + 100))])
    calls, usec = await _usec_per_call(store)
    return usec / max(calls, 1)


async def _run(url: str, rounds: int, n: int) -> list[dict[str, Any]]:
    tree = os.environ.get("BENCH_AB_TREE")
    stores = {"this": await Store.connect(url)}
    # one EVALSHA per apply for both (the checkout's own Store would batch them)
    use_scripts_of(stores["this"], ROOT)
    if tree:
        stores["base"] = await Store.connect(url)
        use_scripts_of(stores["base"], tree)
    rows = []
    for shape in ("one price", "6 selections"):
        got: dict[str, list[float]] = {k: [] for k in stores}
        for r in range(rounds):
            for label, store in stores.items():
                got[label].append(round(await _round(store, shape, n, f"{label}{r}."), 1))
        for label, us in got.items():
            rows.append({"impl": label, "shape": shape, "updates": n,
                         "usec_per_call_median": sorted(us)[len(us) // 2],
                         "usec_per_call_runs": us})
            print(f"  {label} {shape}: {us} us per apply", flush=True)
    for store in stores.values():
        await store.close()
    return rows


def run(quick: bool) -> dict[str, Any]:
    """Every script and shape, interleaved; returns the rows for the report."""
    import uvloop

    from ..common import environment

    with EmbeddedValkey() as vk:
        env = environment(vk.url)
        rows = uvloop.run(_run(vk.url, 3 if quick else 5, 2000 if quick else 10000))
    return {"scenario": "apply_cost", "env": env, "rows": rows,
            "columns": ["impl", "shape", "updates", "usec_per_call_median",
                        "usec_per_call_runs"]}


def main() -> None:
    from ..common import cli

    cli("apply_cost", run, __doc__)


if __name__ == "__main__":
    main()
