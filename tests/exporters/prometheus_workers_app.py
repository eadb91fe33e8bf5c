"""The app ``uvicorn --workers 2`` serves in the Prometheus tests: each worker configures the
exporter given in ``OBS_TEST_EXPORTER`` at import, and answers ``/pid`` with its process id."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs

obs.configure(service="workers", exporters=[os.environ["OBS_TEST_EXPORTER"]])


async def pid(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(os.getpid()))


app = obs.ObsMiddleware(Starlette(routes=[Route("/pid", pid)]))
