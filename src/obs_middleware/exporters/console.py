"""Console exporter: one readable tree per trace, for development."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from .._json import valid_text
from .._record import FIXED_KEYS, IDENTITY_KEYS, Record

__all__ = ["ConsoleExporter"]

_FIXED = frozenset(FIXED_KEYS)
_STACK = "exception.stacktrace"
_HIDDEN = frozenset({"span.kind", "events", "http.route", "http.method", _STACK, *IDENTITY_KEYS})
_HIDDEN_OF_LOGS = _HIDDEN | {"log.level", "log.logger", "log.message"}  # on the line already
_MAX_HELD_BATCHES = 2


class ConsoleExporter:
    """Print each trace as an indented tree once its root span has arrived.

    Spans are held until their trace's root (a span with no parent, or a server span continuing a
    remote trace) is exported, or for two batches at most, then printed. ``attributes=False`` prints
    names, statuses and durations only.
    """

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, attributes: bool = True) -> None:
        self.stream = stream
        self.attributes = attributes
        self._pending: dict[str | None, list[Record]] = {}
        self._age: dict[str | None, int] = {}

    def export(self, records: Sequence[Record]) -> None:
        """Group by trace, print the traces that are complete."""
        for rec in records:
            self._pending.setdefault(rec["trace_id"], []).append(rec)
        lines: list[str] = []
        for trace_id in list(self._pending):
            group = self._pending[trace_id]
            age = self._age.get(trace_id, 0)
            if trace_id is None or _has_root(group) or age >= _MAX_HELD_BATCHES:
                lines.extend(self._render(trace_id, group))
                del self._pending[trace_id]
                self._age.pop(trace_id, None)
            else:
                self._age[trace_id] = age + 1
        if lines:
            _write(self.stream or sys.stdout, "\n".join(lines) + "\n")

    def flush(self) -> None:
        """Print whatever is held and flush the stream."""
        lines: list[str] = []
        for trace_id, group in self._pending.items():
            lines.extend(self._render(trace_id, group))
        self._pending.clear()
        self._age.clear()
        stream = self.stream or sys.stdout
        if lines:
            _write(stream, "\n".join(lines) + "\n")
        stream.flush()

    def shutdown(self) -> None:
        """Print what is held."""
        self.flush()

    def after_fork(self) -> None:
        """In a forked child: forget the traces held (the parent prints them)."""
        self._pending = {}
        self._age = {}

    # -- rendering -------------------------------------------------------------------------------
    def _render(self, trace_id: str | None, group: list[Record]) -> list[str]:
        if trace_id is None:
            return [self._line(rec) for rec in group]
        ids = {rec["span_id"] for rec in group if rec["type"] == "span"}
        children: dict[str | None, list[Record]] = {}
        for rec in sorted(group, key=lambda r: r["start"]):
            parent = rec["span_id"] if rec["type"] == "event" else rec["parent_id"]
            children.setdefault(parent if parent in ids else None, []).append(rec)
        lines = [f"trace {trace_id}{_identity(group[0])}"]

        def walk(parent: str | None, prefix: str) -> None:
            kids = children.get(parent, [])
            for i, rec in enumerate(kids):
                last = i == len(kids) - 1
                lines.append(f"{prefix}{'└─ ' if last else '├─ '}{self._line(rec)}")
                stack = rec.get(_STACK)
                if stack and self.attributes:  # under its span, indented as its children
                    inner = prefix + ("   " if last else "│  ")
                    lines.extend(f"{inner}  ! {frame}" for frame in str(stack).splitlines())
                if rec["type"] == "span":
                    walk(rec["span_id"], prefix + ("   " if last else "│  "))

        walk(None, "")
        return lines

    def _line(self, rec: Record) -> str:
        hidden = _HIDDEN
        if rec["type"] == "event":
            text = f"• {rec['name']}"
            if rec["name"] == "log" and "log.message" in rec:  # an application log record
                text += f" {rec.get('log.level')} {rec.get('log.logger')}: {rec['log.message']}"
                hidden = _HIDDEN_OF_LOGS
        else:
            text = f"{rec['name']}  {rec['duration_ms']:.3f} ms"
            if rec["status"] != "ok":
                text += f"  [{rec['status']}"
                text += f": {rec['error_type']}]" if rec["error_type"] else "]"
        if rec.get("user_id"):
            text += f"  user={rec['user_id']}"
        if self.attributes:
            attrs = [
                f"{k}={v}"
                for k, v in rec.items()
                if k not in _FIXED and k not in hidden and v is not None
            ]
            if attrs:
                text += "  " + " ".join(attrs)
        return text


def _identity(rec: Record) -> str:
    # The process identity, once per trace header (every record of a batch shares it).
    parts = [f"{key}={rec[key]}" for key in IDENTITY_KEYS if rec.get(key) is not None]
    return "  " + " ".join(parts) if parts else ""


def _write(stream: TextIO, text: str) -> None:
    try:
        stream.write(text)
    except UnicodeEncodeError:  # lone surrogates, or a narrower encoding: nothing was written
        encoding = getattr(stream, "encoding", None) or "utf-8"
        stream.write(valid_text(text).encode(encoding, "replace").decode(encoding))


def _has_root(group: list[Record]) -> bool:
    return any(
        rec["type"] == "span" and (rec["parent_id"] is None or rec.get("span.kind") == "server")
        for rec in group
    )
