"""Stdlib ``logging``: trace and span ids on every ``LogRecord`` made inside a span.

Adds ``trace_id``, ``span_id``, ``request_id`` and ``user_id`` attributes (empty strings outside a
span, so a format string such as ``%(trace_id)s`` never fails). Patches the log record factory,
so it works with every handler and formatter; cost is paid per record, never per span. The ids
are taken where the record is made, so a ``QueueHandler`` that formats later keeps them.
``obs_middleware.logs`` has the JSON formatter that writes them, ``LogHandler`` to export
WARNING+ records through the pipeline (``configure(logs=)``), and ``SpanEventHandler`` to keep
them as events of the current span.
"""

from __future__ import annotations

import logging
from typing import Any

from .._core.patches import Patches
from .._core.span import current_span
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("logging").requirement  # the stdlib: any version

_patches = Patches("logging")


def patch() -> None:
    """Wrap the current log record factory (idempotent)."""
    if _patches:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            span = current_span()
            if span is None:
                record.trace_id = record.span_id = record.request_id = record.user_id = ""
            else:
                local = span.local
                record.trace_id = span.trace_hex
                record.span_id = span.span_hex
                record.request_id = local.request_id or ""
                record.user_id = local.user_id or ""
        except Exception:  # never break logging
            pass
        return record

    def restore() -> None:
        # Only if ours is still installed: a factory set on top of it stays.
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)

    logging.setLogRecordFactory(factory)
    _patches.on_undo(restore)


def unpatch() -> None:
    """Restore the previous factory if ours is still installed (idempotent)."""
    _patches.undo()
