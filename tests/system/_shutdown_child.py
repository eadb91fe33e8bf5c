"""The process the shutdown matrix stops: makes spans, then ends one of five ways.

Run as a script (``python _shutdown_child.py``) for ``shutdown``, ``sigterm``,
``sigterm_chained`` and ``exit``; served by uvicorn (``uvicorn _shutdown_child:app``) for
``uvicorn``, where ``GET /produce?start=&n=&flush=`` makes the spans. Read from the environment:
``CHILD_STOP`` (the way it ends), ``CHILD_EXPORTER`` (an exporter spec), ``CHILD_REPORT`` (a
file), and the ``OBS_*`` variables (``OBS_SPOOL_DIR``, ``OBS_HTTP_TAG``).

The counts of dropped records go to ``CHILD_REPORT`` as JSON after each of obs's last hooks
(``_setup.shutdown``, which ``atexit`` and the SIGTERM handler call, and the lifespan's
``_setup.server_stopping``), the last report winning: after SIGTERM the default action kills the
process right after our handler, so no hook of the child's own could run later.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.metrics import registry

STOP = os.environ["CHILD_STOP"]


def report() -> None:
    points = registry.snapshot()["obs.dropped"].points
    with open(os.environ["CHILD_REPORT"], "w") as f:
        json.dump({reason: count for (reason,), count in points.items()}, f)


def _reporting(hook: Any) -> Any:
    def wrapper(*args: Any) -> Any:
        result = hook(*args)
        report()
        return result

    return wrapper


_setup.shutdown = _reporting(_setup.shutdown)
_setup.server_stopping = _reporting(_setup.server_stopping)


def produce(start: int, n: int, flush: float = 0.0) -> None:
    for i in range(start, start + n):
        with obs.span("work", n=i):
            pass
    if flush:
        obs.flush(flush)  # a batch is on its way: with a hung backend, a request hangs


stopped = False
if STOP == "sigterm_chained":

    def on_sigterm(signum: int, frame: Any) -> None:
        global stopped
        stopped = True

    # A server's own handler, installed before obs: obs chains it.
    signal.signal(signal.SIGTERM, on_sigterm)

obs.configure(
    service="shutdown-matrix",
    exporters=[os.environ["CHILD_EXPORTER"]],
    sampling=obs.SamplingOptions(traces_per_s=0),  # every span is delivered, spooled or counted
)


if STOP == "uvicorn":
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def produce_route(request: Request) -> PlainTextResponse:
        query = request.query_params
        produce(int(query["start"]), int(query["n"]), float(query.get("flush", 0)))
        return PlainTextResponse("ok")

    app = obs.ObsMiddleware(Starlette(routes=[Route("/produce", produce_route)]))


def main() -> None:
    produce(0, 1000, flush=0.5)
    produce(1000, 1000)  # queued behind the batch on its way
    if STOP in ("shutdown", "exit"):
        print("stop", time.monotonic(), flush=True)
        if STOP == "shutdown":
            obs.shutdown()
            report()
        return  # "exit": the interpreter exits, obs's atexit hook runs
    print("ready", flush=True)
    deadline = time.monotonic() + 60
    while not stopped and time.monotonic() < deadline:  # a server's main loop
        time.sleep(0.05)
    if not stopped:
        sys.exit("no SIGTERM came")


if __name__ == "__main__":
    main()
