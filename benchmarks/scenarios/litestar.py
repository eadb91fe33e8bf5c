"""Scenario ``litestar``: the hello request on Litestar (bare, ``ObsPlugin``, OTel's plugin)."""

# ruff: noqa: PLC0415

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _peers import ObsHandle, OtelHandle

from . import Bench, asgi_bench


def build(config: str, workdir: Path) -> Bench:
    """The hello request on Litestar under ``config`` (bare, obs, otel)."""
    from litestar import Litestar, get

    @get("/items/{item_id:str}")
    async def get_item(item_id: str) -> dict[str, Any]:
        return {"item_id": item_id, "name": "widget", "price": 9.5, "stock": 3}

    handle: Any = None
    plugins: list[Any] = []
    if config == "obs":
        from obs_middleware.middleware.litestar import ObsPlugin

        handle = ObsHandle(workdir)
        plugins.append(ObsPlugin())
    elif config == "otel":
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

        handle = OtelHandle()
        plugins.append(OpenTelemetryPlugin(OpenTelemetryConfig(tracer_provider=handle.provider)))
    elif config != "bare":
        raise ValueError(f"unknown config {config!r}")
    app = Litestar(route_handlers=[get_item], plugins=plugins, logging_config=None)

    def check(body: bytes) -> None:
        assert json.loads(body)["item_id"] == "42", body

    return asgi_bench(app, handle, "/items/42", check)  # type: ignore[arg-type]
