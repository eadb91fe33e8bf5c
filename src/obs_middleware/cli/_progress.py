"""Progress for the ``obs`` commands: a one-line bar (``obs demo``), and a message printed only
when a step outlasts a second (``after``)."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

__all__ = ["Progress", "after"]

_WIDTH = 32


class Progress:
    """``Progress(total, "requests")``; call ``advance()`` per item and ``close()`` at the end.

    On a terminal the bar redraws in place at most 20 times a second; otherwise one line is
    printed at each quarter, so logs stay short.
    """

    def __init__(self, total: int, label: str, stream: TextIO | None = None) -> None:
        self.total = max(total, 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.errors = 0
        self.started = time.perf_counter()
        self._drawn = 0.0
        self._quarter = 0

    def advance(self, error: bool = False) -> None:
        """Count one finished item (``error`` for a failed one)."""
        self.done += 1
        self.errors += error
        if self.tty:
            now = time.perf_counter()
            if now - self._drawn >= 0.05 or self.done == self.total:
                self._drawn = now
                self.stream.write("\r" + self._line())
                self.stream.flush()
        elif self.done * 4 // self.total > self._quarter:
            self._quarter = self.done * 4 // self.total
            self.stream.write(self._line() + "\n")

    def _line(self) -> str:
        fraction = min(self.done / self.total, 1.0)
        filled = int(fraction * _WIDTH)
        elapsed = time.perf_counter() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        bar = "█" * filled + "░" * (_WIDTH - filled)
        return (
            f"{bar} {self.done:>5}/{self.total} {self.label}  {rate:,.0f}/s  "
            f"{self.errors} errors  {elapsed:.1f} s"
        )

    def close(self) -> None:
        """Finish the line."""
        if self.tty:
            self.stream.write("\r" + self._line() + "\n")
            self.stream.flush()


@contextlib.contextmanager
def after(delay_s: float, message: str, stream: TextIO | None = None) -> Iterator[None]:
    """Print ``message`` (to stderr) if the block is still running ``delay_s`` seconds in.

    A quick step prints nothing; a slow one says what it is doing instead of looking hung.
    """
    out = stream or sys.stderr

    def say() -> None:
        out.write(message + "\n")
        out.flush()

    timer = threading.Timer(delay_s, say)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
