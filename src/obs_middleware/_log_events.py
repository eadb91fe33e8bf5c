"""Log records as exported point events: what ``logs.LogHandler`` and ``logs.ExportLogs`` share.

A record becomes a core ``Event`` named ``log`` of the span current where it was logged (ids 0
outside a span), with these fields (the contract every exporter maps, OTLP logs included):
``log.level`` (the stdlib level name), ``log.logger``, ``log.message`` (cleaned as error
messages are, ``redact.scrub_error``, cut to ``redact.MAX_MESSAGE``; ``[PRIVATE]`` in a private
trace), and when known ``exception.type``, ``exception.message`` (``redact.error_message``),
``exception.stacktrace`` (``redact.stack_trace``, as a failed span carries it),
``code.file.path``, ``code.line.number``, ``code.function.name``.

Logs are not sampled with their trace: the event is marked sampled, so the finisher hands it to
the pipeline even in a trace head sampling left out (where it would wait in the tail buffer and
be forgotten with the trace). They are rate-limited instead (``Config.logs_per_s``, a token
bucket of that size refilled at that rate): a flood of warnings (a failing dependency logged
per request) would otherwise crowd spans out of the export queue. Over the limit a record is
counted (``obs.dropped{reason="log_rate"}``) and never built. What the pipeline cannot take is
counted there (``queue_full``).

Never re-entered: records of our own loggers (``obs_middleware.*``), records logged while one is
being exported (a thread-local flag), on the export worker (a library the exporters use) or
under ``EXPORTING`` are skipped; records logged on an event handler's thread (``obs.attach``)
are exported but not dispatched to handlers again, so a handler of ``log`` that logs cannot feed
itself. A failure is counted (``obs.dropped{reason="log_failed"}``), logged once, never raised.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from ._core import events
from ._core import span as _span
from ._core.context import EXPORTING
from ._core.internal import internal_error
from ._core.metrics import dropped
from ._core.redact import MAX_MESSAGE, PRIVATE, error_message, scrub, scrub_error, stack_trace
from ._core.redact import truncate as _truncate
from ._core.span import Event, Span

__all__ = [
    "DROP_REASON",
    "RATE_REASON",
    "CodeLocation",
    "export_log",
    "is_ours",
    "log_failed",
    "set_log_rate",
    "skipped_here",
]

# (file path, line number, function name), each None when unknown.
CodeLocation = tuple[str | None, int | None, str | None]

_OURS = "obs_middleware"
_OURS_BELOW = _OURS + "."
_EXPORT_THREAD = "obs-export"  # the pipeline's worker (_pipeline.Pipeline)
_HANDLER_THREAD = "obs-handler-"  # event handler workers (_core/events)
_PRIVATE_MARK = "__obs_private__"  # set by span.mark_private_exception
DROP_REASON = "log_failed"
RATE_REASON = "log_rate"


class _State(threading.local):
    busy = False


_state = _State()


class _Bucket:
    """Tokens for ``per_s`` records a second, at most ``per_s`` at once (0: no limit). Updated
    without a lock: two threads racing may let one record more through, never block."""

    def __init__(self, per_s: float) -> None:
        self.per_s = per_s
        self.tokens = per_s
        self.at = time.monotonic()

    def take(self) -> bool:
        per_s = self.per_s
        if not per_s:
            return True
        now = time.monotonic()
        tokens = min(per_s, self.tokens + (now - self.at) * per_s)
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


_bucket = _Bucket(100.0)


def set_log_rate(per_s: float) -> None:
    """Export at most ``per_s`` log records a second from now on, starting with a full bucket
    (0: no limit); ``configure`` calls it with ``Config.logs_per_s``."""
    global _bucket
    _bucket = _Bucket(float(per_s))


def is_ours(logger_name: str | None) -> bool:
    """Whether ``logger_name`` is one of our own loggers (``obs_middleware`` and below)."""
    return logger_name is not None and (logger_name == _OURS or logger_name.startswith(_OURS_BELOW))


def skipped_here() -> bool:
    """Whether a record logged now must not be exported: one is being exported on this thread,
    or this is the export worker (or an export under way), where a record would feed itself."""
    return _state.busy or EXPORTING.get() or threading.current_thread().name == _EXPORT_THREAD


def export_log(
    level: str,
    logger: str,
    message: str,
    exc: BaseException | None = None,
    code: CodeLocation | None = None,
) -> None:
    """Export one log record as a ``log`` event of the current span (see the module docstring).

    The caller checked the level and ``skipped_here``; raises nothing the caller must handle
    beyond what ``log_failed`` reports.
    """
    if not _bucket.take():
        dropped.add((RATE_REASON,))
        return
    _state.busy = True
    try:
        parent = _span.get_current()
        private = parent is not None and parent.local.private
        fields: dict[str, Any] = {
            "log.level": level,
            "log.logger": logger,
            # Logged text often holds an exception's message (and a request's values): cleaned
            # the same way. A private request's logs often echo its prompt.
            "log.message": PRIVATE if private else _truncate(scrub_error(message), MAX_MESSAGE),
        }
        if exc is not None:
            _add_exception(fields, exc, private)
        if code is not None:
            path, line, function = code
            if path:
                fields["code.file.path"] = _clean_path(path)
            if line is not None:
                fields["code.line.number"] = line
            if function:
                fields["code.function.name"] = function
        _emit(fields, parent)
    finally:
        _state.busy = False


@functools.lru_cache(maxsize=512)
def _clean_path(path: str) -> str:
    # Source paths repeat (a few call sites log): scrubbed once each, as stack trace lines are.
    return scrub(path)


def _add_exception(fields: dict[str, Any], exc: BaseException, private: bool) -> None:
    fields["exception.type"] = type(exc).__qualname__
    fields["exception.message"] = (
        PRIVATE if private or getattr(exc, _PRIVATE_MARK, False) else error_message(exc)
    )
    trace = stack_trace(exc)
    if trace is not None:
        fields["exception.stacktrace"] = trace


def _emit(fields: dict[str, Any], parent: Span | None) -> None:
    # As ``span.emit``, with the event marked sampled: logs are not sampled with the trace.
    try:
        if events.active and not threading.current_thread().name.startswith(_HANDLER_THREAD):
            events.dispatch("log", fields)
    finally:
        event = Event("log", fields, parent)
        event.sampled = True
        _span.on_finish(event)


def log_failed() -> None:
    """Count and report (once) a record that could not be exported; call in an ``except``."""
    _state.busy = True  # the report is logged: it must not come back here
    try:
        dropped.add((DROP_REASON,))
        internal_error("log export", "logging")
    except Exception:  # pragma: no cover - the registry and logging never raise here
        pass
    finally:
        _state.busy = False
