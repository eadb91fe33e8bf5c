"""In-memory exporter, for tests: keeps every record in a list."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from .._record import Record

__all__ = ["MemoryExporter"]


class MemoryExporter:
    """Keep exported records in ``self.records`` (a test asserts on them after ``obs.flush()``)."""

    name = "memory"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()

    def export(self, records: Sequence[Record]) -> None:
        """Append the batch."""
        with self._lock:
            self.records.extend(records)

    def flush(self) -> None:
        """Nothing is buffered."""

    def shutdown(self) -> None:
        """Nothing to release."""

    def after_fork(self) -> None:
        """In a forked child: start empty (the parent's records are the parent's)."""
        self._lock = threading.Lock()  # the parent's may be held by its export thread
        self.records = []

    def clear(self) -> None:
        """Forget every record."""
        with self._lock:
            self.records.clear()
