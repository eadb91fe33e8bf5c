"""Logs: a JSON formatter for stdlib ``logging``, processors for ``structlog``, and log records
exported through the pipeline.

Each log line carries the ``trace_id``, ``span_id``, ``request_id`` and ``user_id`` of the span
current where it was logged (null outside a span), so logs and traces join on ``trace_id``.

Records at WARNING or above (by default) can also be exported by every exporter, as point events
``log`` of the current span (``LogHandler``, ``ExportLogs``; ``configure(logs="WARNING")`` puts a
``LogHandler`` on the root logger): never sampled out with their trace, message scrubbed of
secrets, ``[PRIVATE]`` once the request is marked private. Or they can be kept as events *inside*
the current span, travelling with the trace and sampled with it (``SpanEventHandler``,
``SpanEvents``)::

    handler.setFormatter(JsonFormatter())                      # stdlib logging
    logging.getLogger().addHandler(LogHandler())                # WARNING+ exported as events

    structlog.configure(processors=[add_trace_context, ExportLogs(), JSONRenderer()])
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any

from ._core.redact import MAX_MESSAGE, PRIVATE, scrub_error, truncate
from ._core.span import Span, current_span
from ._json import dumps_json
from ._log_events import CodeLocation, export_log, is_ours, log_failed, skipped_here

__all__ = [
    "ExportLogs",
    "JsonFormatter",
    "LogHandler",
    "SpanEventHandler",
    "SpanEvents",
    "add_trace_context",
]

_IDS = ("trace_id", "span_id", "request_id", "user_id")
# Attributes every LogRecord has: the rest came from ``extra=`` and is written as fields.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    *_IDS,
}
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
    text = PRIVATE if span.local.private else truncate(scrub_error(message), MAX_MESSAGE)
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
        self.level = _level(level)

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


def _level(level: int | str) -> int:
    """A level number from a number or a name (``"warning"``, ``"WARNING"``); ValueError else."""
    if isinstance(level, int):
        return level
    number = _LEVELS.get(level.lower())
    if number is None:
        raise ValueError(f"unknown log level {level!r}")
    return number


class LogHandler(logging.Handler):
    """A logging handler that exports each record (WARNING and above by default) through the
    pipeline: every exporter gets it as an event ``log`` of the span current where it was logged.

    Fields: ``log.level``, ``log.logger``, ``log.message`` (secrets scrubbed as in error messages,
    cut to 1,024 characters; ``[PRIVATE]`` in a private trace), ``code.file.path``,
    ``code.line.number``, ``code.function.name`` and, for a record with an exception,
    ``exception.type``, ``exception.message`` and ``exception.stacktrace``. Exported even when
    the trace is sampled out. Records of ``obs_middleware`` loggers are skipped. It never raises:
    a record it cannot export is counted (``obs.dropped{reason="log_failed"}``) and reported
    once. ``configure(logs="WARNING")`` (``OBS_LOGS``) attaches one to the root logger; or
    ``logging.getLogger().addHandler(LogHandler())``. Cost: per record at its level, never per
    span.
    """

    def __init__(self, level: int | str = logging.WARNING) -> None:
        super().__init__(_level(level))

    def emit(self, record: logging.LogRecord) -> None:
        """Export ``record`` (unless it is ours, or logged while exporting)."""
        try:
            if _alone(self, record):
                last = logging.lastResort  # what stdlib logging does when no handler is found
                if last is not None and record.levelno >= last.level:
                    last.handle(record)
            if is_ours(record.name) or skipped_here():
                return
            exc_info = record.exc_info
            exc = exc_info[1] if exc_info else None
            msg = record.msg
            if type(msg) is dict and "event" in msg and not record.args:
                # structlog through stdlib logging (``ProcessorFormatter.wrap_for_formatter``):
                # the record holds the event dict; its other keys stay in the app's own log.
                message = str(msg["event"])
                exc = exc or _exception(msg.get("exc_info"), "")
            else:
                message = _message(record)
            export_log(
                record.levelname,
                record.name,
                message,
                exc,
                (record.pathname, record.lineno, record.funcName),
            )
        except Exception:
            log_failed()

    def handleError(self, record: logging.LogRecord) -> None:
        """Count and report once (never print to stderr, never raise)."""
        log_failed()


def _alone(handler: logging.Handler, record: logging.LogRecord) -> bool:
    """Whether ``handler`` is the only one ``record`` meets: the root logger's only handler, and
    no logger on the way to it has any. Stdlib logging would then have printed the record to
    stderr (``logging.lastResort``): it still does, and our own warnings stay loud."""
    root = logging.root
    handlers = root.handlers
    if len(handlers) != 1 or handlers[0] is not handler:
        return False
    logger = root.manager.loggerDict.get(record.name)
    while isinstance(logger, logging.Logger) and logger is not root:
        if logger.handlers:
            return False
        logger = logger.parent
    return True


def _message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:  # arguments that do not fit the format: the application's own bug
        return str(record.msg)


class ExportLogs:
    """A structlog processor that exports events at ``level`` or above (WARNING by default)
    through the pipeline, as ``LogHandler`` does for stdlib records: an event ``log`` of the
    current span, whatever the trace's sampling.

    ``log.message`` is the ``event`` (scrubbed, cut; ``[PRIVATE]`` in a private trace),
    ``log.logger`` the ``logger`` key (``structlog.stdlib.add_logger_name``) or the wrapped
    logger's name, ``exception.*`` from ``exc_info`` (place it before ``format_exc_info``), and
    ``code.*`` from ``CallsiteParameterAdder``'s ``pathname``/``lineno``/``func_name`` when
    present. The event dict passes through unchanged. With structlog routed through stdlib
    logging, use this or a ``LogHandler``, not both (each would export the record).
    """

    def __init__(self, level: int | str = logging.WARNING) -> None:
        self.level = _level(level)

    def __call__(
        self, logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """Export the event when its level is high enough; return it unchanged."""
        number = _LEVELS.get(method_name, logging.INFO)
        if number < self.level:
            return event_dict
        try:
            name = event_dict.get("logger") or getattr(logger, "name", None)
            name = name if isinstance(name, str) else ""
            if is_ours(name) or skipped_here():
                return event_dict
            export_log(
                logging.getLevelName(number),
                name,
                str(event_dict.get("event", "")),
                _exception(event_dict.get("exc_info"), method_name),
                _callsite(event_dict),
            )
        except Exception:
            log_failed()
        return event_dict


def _exception(exc_info: Any, method_name: str) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
        exc = exc_info[1]
        return exc if isinstance(exc, BaseException) else None
    if exc_info is True or (exc_info is None and method_name == "exception"):
        return sys.exc_info()[1]
    return None


def _callsite(event_dict: MutableMapping[str, Any]) -> CodeLocation | None:
    path, line, function = (event_dict.get(k) for k in ("pathname", "lineno", "func_name"))
    if path is None and line is None and function is None:
        return None
    return (
        path if isinstance(path, str) else None,
        line if type(line) is int else None,
        function if isinstance(function, str) else None,
    )


# -- the root logger's handler (``Config.logs``) ---------------------------------------------------
_root_handler: LogHandler | None = None
# The configuration functions that replace the root logger's handlers, wrapped while ours is on.
_CONFIG_FUNCTIONS = (
    ("logging", "basicConfig"),
    ("logging.config", "dictConfig"),
    ("logging.config", "fileConfig"),
)
_originals: dict[tuple[str, str], Any] = {}


def root_handler(level: str | None) -> None:
    """Keep one ``LogHandler`` on the root logger at ``level`` (None: take it off) (``configure``
    calls this with ``Config.logs``; not thread-safe: the caller holds its lock).

    While it is on, ``logging.basicConfig``, ``logging.config.dictConfig`` and ``fileConfig`` are
    wrapped so the application's own configuration works as without it: ``basicConfig`` still
    sees a root logger without handlers (else it would do nothing), and a configuration that
    replaces the root's handlers keeps ours. A handler the application attached itself is never
    touched.
    """
    global _root_handler
    root = logging.getLogger()
    handler = _root_handler
    if level is None:
        if handler is not None:
            root.removeHandler(handler)
            _root_handler = None
            _unwrap_config_functions()
        return
    if handler is None:
        handler = _root_handler = LogHandler(level)
        _wrap_config_functions()
    else:
        handler.setLevel(_level(level))
    root.addHandler(handler)  # a no-op when it is there already


def _wrap_config_functions() -> None:
    for module_name, name in _CONFIG_FUNCTIONS:
        module = importlib.import_module(module_name)  # logging.config: only when logs export
        original = getattr(module, name)
        _originals[module_name, name] = original
        setattr(module, name, _aside(original))


def _unwrap_config_functions() -> None:
    for (module_name, name), original in _originals.items():
        module = sys.modules[module_name]
        if getattr(getattr(module, name), "__wrapped__", None) is original:  # still ours on top
            setattr(module, name, original)
    _originals.clear()


def _aside(original: Any) -> Any:
    """``original`` run with our root handler set aside, then put back."""

    @functools.wraps(original)
    def configure_logging(*args: Any, **kwargs: Any) -> Any:
        handler = _root_handler
        if handler is None:
            return original(*args, **kwargs)
        root = logging.getLogger()
        root.removeHandler(handler)
        try:
            return original(*args, **kwargs)
        finally:
            if _root_handler is handler:
                root.addHandler(handler)

    return configure_logging
