"""Our own failures: logged once per place, never raised into the app.

Every layer that runs inside user code (the middleware around a request, an integration's wrapper
around an SDK call or a SQL statement) catches its own exceptions and reports them here:

- ``internal_error(where)`` in an ``except`` block: the exception being handled is logged at
  WARNING with its traceback the first time ``where`` fails, as
  ``obs-middleware: internal error in <where> (<unaffected> unaffected)``; later failures of the
  same place are silent.
- ``warn_once(key, message, *args)``: any other warning (a misconfiguration, a version outside
  the supported range), logged once per ``key``.
- ``once(key)``: the bare guard, for a warning whose arguments cost something to compute.

Keys are shared by the whole process: name them after the place (``"httpx request start"``,
``"sqlalchemy:version"``). Called on failure paths only: the hot paths pay nothing.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["internal_error", "once", "warn_once"]

_log = logging.getLogger("obs_middleware")
_warned: set[str] = set()


def once(key: str) -> bool:
    """Return True the first time ``key`` is passed in this process, False every later time."""
    if key in _warned:
        return False
    _warned.add(key)
    return True


def internal_error(
    where: str, unaffected: str = "request", *, logger: logging.Logger = _log
) -> None:
    """Log the exception being handled as our own failure in ``where``, once per ``where``.

    ``unaffected`` names what goes on untouched (the request, the call, the query).
    """
    if where not in _warned:
        _warned.add(where)
        logger.warning(
            "obs-middleware: internal error in %s (%s unaffected)", where, unaffected, exc_info=True
        )


def warn_once(key: str, message: str, *args: Any, logger: logging.Logger = _log) -> None:
    """Log ``"obs-middleware: " + message % args`` at WARNING, once per ``key``."""
    if key not in _warned:
        _warned.add(key)
        logger.warning("obs-middleware: " + message, *args)
