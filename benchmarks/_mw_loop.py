"""The ASGI middleware alone, in a tight loop: its cost around a trivial app (W3 without Starlette).

``python benchmarks/_mw_loop.py [REQUESTS]``: the bare app and the same app wrapped in
``ObsMiddleware`` (default configuration, jsonl to a scratch file) on one event loop, batches
alternating, CPU per request; prints the bare cost and the median of the paired differences.
Steady to about ±0.1 µs here, so a change to the request path can be judged in seconds before an
A/B run (BENCHMARKS.md, *Levers tried*). A diagnostic: it gates nothing.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from typing import Any

from workloads._asgi import scope

import obs_middleware as obs
from obs_middleware import ObsMiddleware


class _Route:  # what Starlette's router leaves in ``scope["route"]``
    path_format = path = "/items/{item_id}"
    name = "get_item"


_ROUTE = _Route()
_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"json")]}
_BODY = {"type": "http.response.body", "body": b'{"item_id": "42"}'}


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = _ROUTE
    await send(dict(_START))
    await send(_BODY)


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    pass


def main(argv: list[str]) -> None:
    """``_mw_loop.py [REQUESTS]`` (per batch; 20,000 by default), 15 rounds."""
    n = int(argv[0]) if argv else 20_000
    obs.configure(exporters=[f"jsonl:{tempfile.mkdtemp()}/spans.jsonl"])
    base = scope("/items/42")
    sides = {"bare": _app, "obs": ObsMiddleware(_app)}

    async def drive(app: Any) -> None:
        for _ in range(n):
            await app(dict(base), _receive, _send)

    loop = asyncio.new_event_loop()
    for app in sides.values():
        loop.run_until_complete(drive(app))
    spent: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(15):
        for name in sides if r % 2 else reversed(sides):
            gc.collect()
            t0 = time.process_time()
            loop.run_until_complete(drive(sides[name]))
            obs.flush()
            spent[name].append((time.process_time() - t0) / n * 1e9)
    diffs = [o - b for o, b in zip(spent["obs"], spent["bare"], strict=True)]
    print(
        f"bare {statistics.median(spent['bare']):.0f} ns/request, "
        f"ObsMiddleware +{statistics.median(diffs):.0f} ns"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
