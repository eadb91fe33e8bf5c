"""JSON lines: one record per line, to stdout or a file (the record of docs/ARCHITECTURE.md)."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence
from typing import IO

import orjson

from .._core.metrics import dropped
from .._json import dumps_json, json_default
from .._record import Record

__all__ = ["JsonlExporter"]

_OPTS = orjson.OPT_APPEND_NEWLINE
_log = logging.getLogger("obs_middleware")


class JsonlExporter:
    """Write each batch as NDJSON with one ``write`` call.

    ``path=None`` writes to stdout (flushed after each batch); a path is opened unbuffered in
    append mode, so processes sharing the file never split each other's lines: each batch is one
    ``write`` on an ``O_APPEND`` descriptor, and nothing waits in a buffer a forked child would
    inherit.

    A file that cannot be opened (its directory does not exist, no permission) costs no
    traceback: one warning (at construction when the directory is missing, else at the first
    failed batch), then every batch it could not take is counted in ``obs.dropped`` (reason
    ``unwritable:jsonl``); the file is tried again on each batch, so creating the directory later
    resumes the export.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = os.fspath(path) if path is not None else None
        self._file: IO[bytes] | None = None
        self._warned = False
        if self.path is not None:
            directory = os.path.dirname(os.path.abspath(self.path))
            if not os.path.isdir(directory):
                self._warned = True
                warnings.warn(
                    f"obs-middleware: jsonl exporter: directory {directory!r} does not exist; "
                    'records are dropped (counted in obs.dropped{reason="unwritable:jsonl"}) '
                    "until it does",
                    stacklevel=2,
                )

    def _out(self) -> IO[bytes]:
        if self._file is None:
            if self.path is None:
                self._file = sys.stdout.buffer
            else:
                self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - kept open
        return self._file

    def export(self, records: Sequence[Record]) -> None:
        """Encode and write one batch (counted in ``obs.dropped`` if the file cannot be opened)."""
        try:
            out = self._out()
        except OSError as exc:
            dropped.add((f"unwritable:{self.name}",), len(records))
            if not self._warned:
                self._warned = True
                _log.warning(
                    "obs-middleware: jsonl exporter cannot open %r (%s); records are dropped "
                    "and counted",
                    self.path,
                    exc,
                )
            return
        # Accumulate in one buffer: keeping a batch of separate bytes objects alive until a join
        # costs ~5x more here (allocator churn), measured with orjson 3.13.
        dumps = orjson.dumps
        data = bytearray()
        try:
            for record in records:
                data += dumps(record, json_default, _OPTS)  # positional: kwargs parse slowly
        except TypeError:  # orjson.JSONEncodeError: an integer past 64 bits, a cycle...
            data = bytearray()
            for record in records:
                data += dumps_json(record, _OPTS)
        done = out.write(data)
        while done < len(data):  # a short write (a signal, a nearly full disk): finish the batch
            done += out.write(memoryview(data)[done:])
        if self.path is None:
            out.flush()

    def flush(self) -> None:
        """Flush the file buffer."""
        if self._file is not None:
            self._file.flush()

    def shutdown(self) -> None:
        """Flush and close the file (stdout stays open)."""
        if self._file is not None:
            self._file.flush()
            if self.path is not None:
                self._file.close()
            self._file = None

    def after_fork(self) -> None:
        """In a forked child: close the child's copy of the file; it reopens it on its next batch.

        No record of the parent's waits in a buffer (see the class), so none is written twice.
        """
        file, self._file = self._file, None
        if file is not None and self.path is not None:
            file.close()
