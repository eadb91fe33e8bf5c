"""W3, the hello request: Starlette ``GET /items/{item_id}`` returning a small ``JSONResponse``."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/items/42"
SPANS = 1  # spans per request when instrumented: the server span


async def get_item(request: Request) -> JSONResponse:
    """The endpoint."""
    item_id = request.path_params["item_id"]
    return JSONResponse({"item_id": item_id, "name": "widget", "price": 9.5, "stock": 3})


def build_app() -> Starlette:
    """The bare app."""
    return Starlette(routes=[Route("/items/{item_id}", get_item)])


def new_app(emulator_url: str = "") -> tuple[Starlette, None]:
    """A fresh bare app (and no engine): the A/B's entry point."""
    return build_app(), None


REQUEST: dict[str, Any] = {"path": PATH}  # Driver keyword arguments


def check(body: bytes) -> None:
    """The answer to ``PATH``."""
    assert json.loads(body)["item_id"] == "42", body
