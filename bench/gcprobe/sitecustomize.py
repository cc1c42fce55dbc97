"""Loaded at start-up by the servers of ``BENCH_GC=1 python -m bench.risk_cost`` (this
directory is put first on their PYTHONPATH): times every cyclic collection per generation
with ``gc.callbacks`` and writes the totals to ``$BENCH_GC_DIR/<pid>.json`` every 0.25 s
(a daemon thread), so the bench can charge a measurement its collections' count and time."""

from __future__ import annotations

import gc
import json
import os
import threading
import time

_DIR = os.environ.get("BENCH_GC_DIR")


def _install(out_dir: str) -> None:
    counts = [0, 0, 0]
    seconds = [0.0, 0.0, 0.0]
    started = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            gen = info["generation"]
            counts[gen] += 1
            seconds[gen] += time.perf_counter() - started[0]

    gc.callbacks.append(timed)
    path = os.path.join(out_dir, f"{os.getpid()}.json")

    def dump() -> None:
        while True:
            time.sleep(0.25)
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"counts": counts, "seconds": seconds}, f)
            os.replace(tmp, path)

    threading.Thread(target=dump, name="gcprobe", daemon=True).start()


if _DIR:
    _install(_DIR)
