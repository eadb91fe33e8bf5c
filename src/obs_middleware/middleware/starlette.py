"""Starlette and FastAPI: ``app.add_middleware(ObsMiddleware)`` runs outside their error handling.

Starlette builds an app's stack as ``ServerErrorMiddleware`` → user middleware →
``ExceptionMiddleware`` → router, so the 500 response for an unhandled exception (its own, or
the app's ``500``/``Exception`` handler's) is sent from outside every user middleware: a
middleware added with ``add_middleware`` never sees it, and that response would lack
``X-Request-ID``. ``patch()`` wraps ``build_middleware_stack`` (Starlette's, and FastAPI's own
copy of it) so that ``ObsMiddleware`` found among the user middleware is taken out and put
around the whole built stack instead, as the Litestar plugin does. The other middleware keep
their order; an app without ``ObsMiddleware`` gets Starlette's stack unchanged; nothing is added
per request. The status and body of every response stay the app's.

It lives with the middleware (it only moves ``ObsMiddleware``); ``instrument_all()`` treats it as
an integration: the registry's ``starlette`` row holds its supported range and calls
``patch()``/``unpatch()`` here.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .._core.internal import internal_error
from .._core.patches import Patches
from .asgi import ObsMiddleware

__all__ = ["is_obs_middleware", "patch", "unpatch"]

_patches = Patches("starlette")


def is_obs_middleware(middleware: Any) -> bool:
    """Whether an entry of a Starlette app's ``user_middleware`` is an ``ObsMiddleware``."""
    cls = getattr(middleware, "cls", None)
    return isinstance(cls, type) and issubclass(cls, ObsMiddleware)


def _outermost(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    try:
        user = instance.user_middleware
        ours = [m for m in user if is_obs_middleware(m)]
    except Exception:
        internal_error("starlette middleware order")
        ours = []
    if not ours:
        return wrapped(*args, **kwargs)
    instance.user_middleware = [m for m in user if not is_obs_middleware(m)]
    try:
        app = wrapped(*args, **kwargs)
    finally:
        instance.user_middleware = user
    for middleware in reversed(ours):  # the first added stays the outermost of ours
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return app


def patch() -> None:
    """Wrap ``build_middleware_stack`` of Starlette and, when installed, FastAPI (idempotent)."""
    if _patches:
        return
    _patches.wrap("starlette.applications", "Starlette.build_middleware_stack", _outermost)
    if importlib.util.find_spec("fastapi") is not None:  # it builds the stack without Starlette's
        _patches.wrap("fastapi.applications", "FastAPI.build_middleware_stack", _outermost)


def unpatch() -> None:
    """Restore the original methods (idempotent); stacks already built stay as they are."""
    _patches.undo()
