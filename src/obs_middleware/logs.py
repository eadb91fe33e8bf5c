"""Log correlation: a JSON formatter for stdlib ``logging``, processors for ``structlog``.

Each log line carries the ``trace_id``, ``span_id``, ``request_id`` and ``user_id`` of the span
current where it was logged (null outside a span), so logs and traces join on ``trace_id``.
Optionally, records at WARNING or above are also kept as events of that span (``log``, with
level, logger and the scrubbed message, ``[PRIVATE]`` once the request is marked private), so
they travel with the trace::

    handler.setFormatter(JsonFormatter())                      # stdlib logging
    logging.getLogger().addHandler(SpanEventHandler())          # WARNING+ as span events

    structlog.configure(processors=[add_trace_context, SpanEvents(), JSONRenderer()])
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from ._core.redact import PRIVATE, scrub_error, truncate
from ._core.span import Span, current_span
from ._json import dumps_json

__all__ = ["JsonFormatter", "SpanEventHandler", "SpanEvents", "add_trace_context"]

_IDS = ("trace_id", "span_id", "request_id", "user_id")
# Attributes every LogRecord has: the rest came from ``extra=`` and is written as fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    *_IDS,
}
_MAX_MESSAGE = 1024
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "msg": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _ids(span: Span | None) -> tuple[str | None, str | None, str | None, str | None]:
    if span is None:
        return None, None, None, None
    local = span.local
    return span.trace_hex, span.span_hex, local.request_id, local.user_id


def _default(value: Any) -> Any:
    return str(value)


class JsonFormatter(logging.Formatter):
    """Format each record as one JSON object.

    Keys: ``time`` (RFC 3339 UTC, µs), ``level``, ``logger``, ``message``, ``trace_id``,
    ``span_id``, ``request_id``, ``user_id``, then ``exc_type``/``exc_message``/``stack`` when an
    exception is attached, then the record's ``extra=`` fields (values orjson cannot encode are
    written with ``str()``). Ids come from the logging integration when it is instrumented (taken
    when the record was made, so a ``QueueHandler`` keeps them), else from the span current when
    formatting. Messages are written as logged: this is the application's own log.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON line (without the newline)."""
        trace_id = getattr(record, "trace_id", None)
        if trace_id is None:  # the logging integration is not instrumented
            ids = _ids(current_span())
        else:
            ids = (
                trace_id or None,
                getattr(record, "span_id", "") or None,
                getattr(record, "request_id", "") or None,
                getattr(record, "user_id", "") or None,
            )
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **dict(zip(_IDS, ids, strict=True)),
        }
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__qualname__
            out["exc_message"] = str(record.exc_info[1])
            out["stack"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["stack"] = record.exc_text
        if record.stack_info:
            out["stack_info"] = record.stack_info
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return dumps_json(out, 0, _default).decode()


def _rfc3339(created: float) -> str:
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + (
        f".{int((created - seconds) * 1_000_000):06d}Z"
    )


def _to_span(span: Span, level: str, logger: str | None, message: str, exc: str | None) -> None:
    # Logged text often holds an exception's message: cleaned the same way. A private request's
    # logs often echo its prompt: only level, logger and type are kept.
    text = PRIVATE if span.local.private else truncate(scrub_error(message), _MAX_MESSAGE)
    fields: dict[str, Any] = {"level": level, "message": text}
    if logger:
        fields["logger"] = logger
    if exc:
        fields["exc_type"] = exc
    span.event("log", **fields)


class SpanEventHandler(logging.Handler):
    """A logging handler that adds each record (WARNING and above by default) to the current span.

    The span gets an event ``log`` with ``level``, ``logger``, ``message`` (secrets scrubbed, cut
    to 1,024 characters; ``[PRIVATE]`` in a private trace) and ``exc_type``. Outside a span it
    does nothing. Add it to the loggers whose warnings belong with traces:
    ``logging.getLogger().addHandler(SpanEventHandler())``.
    """

    def __init__(self, level: int | str = logging.WARNING) -> None:
        super().__init__(level)

    def emit(self, record: logging.LogRecord) -> None:
        """Record ``record`` on the current span, if any."""
        span = current_span()
        if span is None:
            return
        try:
            exc = (
                record.exc_info[0].__qualname__ if record.exc_info and record.exc_info[0] else None
            )
            _to_span(span, record.levelname, record.name, record.getMessage(), exc)
        except Exception:
            self.handleError(record)


def add_trace_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``trace_id``, ``span_id``, ``request_id`` and ``user_id`` (structlog processor).

    Inside a span only; keys the call already set are kept. Place it before the renderer.
    """
    span = current_span()
    if span is not None:
        for key, value in zip(_IDS, _ids(span), strict=True):
            if value is not None:
                event_dict.setdefault(key, value)
    return event_dict


class SpanEvents:
    """A structlog processor that adds events at ``level`` or above to the current span.

    The span gets an event ``log`` with ``level``, ``logger`` (when a processor set one),
    ``message`` (the ``event``, secrets scrubbed, cut to 1,024 characters; ``[PRIVATE]`` in a
    private trace) and ``exc_type``. The event dict passes through unchanged.
    """

    def __init__(self, level: int | str = logging.WARNING) -> None:
        self.level = level if isinstance(level, int) else _LEVELS[level.lower()]

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Record the event on the current span when its level is high enough."""
        if _LEVELS.get(method_name, logging.INFO) >= self.level:
            span = current_span()
            if span is not None:
                try:
                    exc_info = event_dict.get("exc_info")
                    exc = None
                    if isinstance(exc_info, BaseException):
                        exc = type(exc_info).__qualname__
                    elif exc_info is True or method_name == "exception":
                        exc = _current_exception()
                    _to_span(
                        span,
                        logging.getLevelName(_LEVELS.get(method_name, logging.INFO)),
                        event_dict.get("logger"),
                        str(event_dict.get("event", "")),
                        exc,
                    )
                except Exception:
                    logging.getLogger("obs_middleware").debug("span event failed", exc_info=True)
        return event_dict


def _current_exception() -> str | None:
    exc = sys.exc_info()[1]
    return None if exc is None else type(exc).__qualname__
