"""Route templates from an ASGI scope, read after the framework's router has run."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

__all__ = ["route_template"]


def route_template(scope: MutableMapping[str, Any]) -> str | None:
    """The matched route's template (``/items/{id}``), or None when nothing matched."""
    route = scope.get("route")  # Starlette ≥ 0.33 / FastAPI, set by the router after matching
    if route is not None:
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else None
    template = scope.get("path_template")  # Litestar
    return template if isinstance(template, str) else None
