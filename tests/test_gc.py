"""Process tuning of serving processes: the GC and the open-file limit (oddsfeed.worker)."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


def test_tune_gc_freezes_startup_and_raises_the_young_threshold() -> None:
    out = _run("import gc; from oddsfeed.worker import tune_gc; tune_gc(10000); "
               "print(gc.get_threshold(), gc.get_freeze_count() > 0)")
    assert out == "(10000, 20, 50) True"


def test_tune_gc_zero_keeps_python_defaults() -> None:
    out = _run("import gc; d = gc.get_threshold(); from oddsfeed.worker import tune_gc; "
               "tune_gc(0); print(gc.get_threshold() == d, gc.get_freeze_count())")
    assert out == "True 0"


def test_cycles_are_still_collected_after_tuning() -> None:
    out = _run("import gc, weakref\n"
               "from oddsfeed.worker import tune_gc\n"
               "tune_gc(1000)\n"
               "class N: pass\n"
               "a = N(); a.me = a; r = weakref.ref(a); del a\n"
               "for _ in range(5000): [N() for _ in range(10)]\n"
               "x = [[] for _ in range(3000)]\n"
               "print(r() is None)")
    assert out == "True"


def test_raise_fd_limit_goes_up_to_the_hard_limit_only() -> None:
    out = _run("import resource\n"
               "from oddsfeed.worker import raise_fd_limit\n"
               "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
               "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
               "got = raise_fd_limit(512)\n"
               "big = raise_fd_limit(10**9)\n"
               "print(got, big == (hard if hard != resource.RLIM_INFINITY else 10**9))")
    assert out == "512 True"
