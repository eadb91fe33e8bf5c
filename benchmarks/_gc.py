"""Garbage collections per request, bare against instrumented: how often, how long, what freed.

``python benchmarks/_gc.py W2 default 2000``: the A/B's three sides of a workload and mode, one
batch each (after a warm-up), with ``gc.callbacks`` timing every collection. A bare app that
frees everything by reference counting runs none; each collection the instrumented side adds is
CPU the A/B charges it (BENCHMARKS.md, *Levers tried*). A diagnostic: it gates nothing.
"""

from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from workloads import sides

import obs_middleware as obs


def _measure(side: Any, n: int) -> str:
    runs, spent, freed = [0, 0, 0], [0.0, 0.0, 0.0], [0, 0, 0]
    started = 0.0

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        nonlocal started
        if phase == "start":
            started = time.perf_counter()
            return
        generation = info["generation"]
        runs[generation] += 1
        spent[generation] += time.perf_counter() - started
        freed[generation] += info["collected"]

    side.before()
    gc.collect()
    gc.callbacks.append(on_gc)
    cpu = time.process_time()
    try:
        side.run(n)
        obs.flush(10.0)
    finally:
        cpu = time.process_time() - cpu
        gc.callbacks.remove(on_gc)
        side.after()
    return (
        f"{side.name:6} {cpu / n * 1e6:8.1f} µs CPU/request; per request, by generation: "
        f"collections {[round(r / n, 4) for r in runs]}, "
        f"µs {[round(s / n * 1e6, 2) for s in spent]}, "
        f"objects freed {[round(f / n, 1) for f in freed]}"
    )


def main(argv: list[str]) -> None:
    """``_gc.py WORKLOAD MODE REQUESTS``."""
    workload, mode, n = argv[0], argv[1], int(argv[2])
    setup = sides.build(workload, mode, Path(tempfile.mkdtemp()))
    try:
        order = (setup.bare, setup.obs, setup.bare2)
        for side in order:  # warm-up
            side.before()
            side.run(n)
            side.after()
        for side in order:
            print(_measure(side, n))
    finally:
        sides.cleanup()


if __name__ == "__main__":
    main(sys.argv[1:])
