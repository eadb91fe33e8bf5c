"""The app the SIGTERM tests serve: every request makes a server span and a child span."""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import obs_middleware as obs

# A long export interval: without the shutdown flush, nothing would reach the file in time.
os.environ.setdefault("OBS_EXPORT_INTERVAL_S", "3600")
obs.configure(service="sigterm-test", exporters=[f"jsonl:{os.environ['OBS_TEST_OUT']}"])


async def hello(request: Request) -> PlainTextResponse:
    with obs.span("work"):
        return PlainTextResponse("hi")


app = Starlette(routes=[Route("/hello", hello)])
app.add_middleware(obs.ObsMiddleware)
