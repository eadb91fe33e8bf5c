"""Event handlers attached by name prefix (beam-telemetry semantics).

``attach(handler_id, prefix, fn)`` calls ``fn(event_name, fields)`` for every event whose name
starts with ``prefix``. A handler that raises an ``Exception`` is detached and logged once; a
``BaseException`` that is not one (``KeyboardInterrupt``, ``SystemExit``, a cancellation) is control
flow and propagates to the code that started or ended the span, which is by then no longer current
(``.start``) or already handed to export (``.stop``, events). With no handler attached, emitters pay
one module attribute read (``events.active``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .forks import renew_after_fork

__all__ = ["Handler", "active", "attach", "detach", "dispatch"]

Handler = Callable[[str, dict[str, Any]], None]

_log = logging.getLogger("obs_middleware")
_lock = threading.Lock()
renew_after_fork(globals(), "_lock", threading.Lock)
_handlers: dict[str, tuple[str, Handler]] = {}  # handler id -> (prefix, fn)
_by_event: dict[str, tuple[tuple[str, Handler], ...]] = {}  # event name -> matching handlers
active = False
_MAX_CACHED = 4096


def attach(handler_id: str, prefix: str, fn: Handler) -> None:
    """Call ``fn(event, fields)`` for every event whose name starts with ``prefix``.

    ``prefix=""`` matches every event. Re-attaching an id replaces its handler.
    """
    global active
    with _lock:
        _handlers[handler_id] = (prefix, fn)
        _by_event.clear()
        active = True


def detach(handler_id: str) -> bool:
    """Detach a handler; returns False if no handler had that id."""
    global active
    with _lock:
        found = _handlers.pop(handler_id, None) is not None
        _by_event.clear()
        active = bool(_handlers)
    return found


def dispatch(event: str, fields: dict[str, Any]) -> None:
    """Deliver one event to the handlers whose prefix matches it."""
    matching = _by_event.get(event)
    if matching is None:
        with _lock:
            matching = tuple(
                (hid, fn) for hid, (prefix, fn) in _handlers.items() if event.startswith(prefix)
            )
            if len(_by_event) >= _MAX_CACHED:  # high-cardinality event names: stay bounded
                _by_event.clear()
            _by_event[event] = matching
    for handler_id, fn in matching:
        try:
            fn(event, fields)
        except Exception:
            if detach(handler_id):
                _log.exception(
                    "obs-middleware: handler %r raised on %r and was detached", handler_id, event
                )
