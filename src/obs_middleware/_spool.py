"""The disk spool: batches a backend could not take, kept on disk and replayed in order."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import struct
import time
import zlib
from collections.abc import Generator, Sequence

from ._json import decode_records, encode_records
from ._record import Record

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the spool needs POSIX file locks
    fcntl = None  # type: ignore[assignment]

__all__ = ["SPOOL_SUPPORTED", "Spool"]

SPOOL_SUPPORTED = fcntl is not None

_log = logging.getLogger("obs_middleware")
_FRAME = struct.Struct("<II")  # payload length, crc32
_SEGMENT_BYTES = 4 * 1024 * 1024


class Spool:
    """Batches on disk, oldest first, shared safely by every process using the same directory.

    Each process appends frames (length, crc32, NDJSON batch) to its own segment file, which it
    holds under an exclusive ``flock`` while writing (``*.open``) and renames ``*.seg`` when done.
    A reader takes a segment only when it wins that lock (so a live writer's segment and a segment
    another process is replaying are skipped), resumes after the offset recorded in ``*.ack``, and
    deletes the segment once every frame is delivered. Segments of a crashed writer are replayed
    too. Frames are fsync'd in batches (``fsync_s``) and whenever a segment is closed.
    """

    def __init__(self, directory: str, max_bytes: int, fsync_s: float) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.fsync_s = fsync_s
        os.makedirs(directory, exist_ok=True)
        self._fd: int | None = None
        self._path = ""
        self._size = 0
        self._dirty = False
        self._synced_at = 0.0
        self._acked = False
        self._replaying: int | None = None  # the segment ``batches()`` holds, if any
        self.bytes = self._scan()

    # -- writing -----------------------------------------------------------------------------------
    def _scan(self) -> int:
        total = 0
        for entry in os.scandir(self.directory):
            if entry.name.endswith((".seg", ".open")):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
        return total

    def has_data(self) -> bool:
        """Tell whether anything, of this process or another, waits in the directory."""
        return self._fd is not None or any(self._segments())

    def append(self, records: Sequence[Record]) -> bool:
        """Write one batch; False (nothing written) when the spool is full."""
        payload = encode_records(records)
        frame = _FRAME.pack(len(payload), zlib.crc32(payload)) + payload
        if self.bytes + len(frame) > self.max_bytes:
            self.bytes = self._scan()  # other processes may have replayed since we last looked
            if self.bytes + len(frame) > self.max_bytes:
                return False
        if self._fd is None or self._size >= _SEGMENT_BYTES:
            self.seal()
            self._open_segment()
        assert self._fd is not None
        os.write(self._fd, frame)
        self._size += len(frame)
        self.bytes += len(frame)
        self._dirty = True
        now = time.monotonic()
        if now - self._synced_at >= self.fsync_s:
            self._sync(now)
        return True

    def _open_segment(self) -> None:
        assert fcntl is not None
        name = f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"
        # Created under a name readers ignore, locked, then renamed: no reader can ever take
        # (and delete) a segment between its creation and its lock.
        tmp = os.path.join(self.directory, f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._path = os.path.join(self.directory, name + ".open")
        os.rename(tmp, self._path)
        self._fd = fd
        self._size = 0

    def _sync(self, now: float) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._synced_at = now

    def seal(self) -> None:
        """Close this process's segment (fsync'd) so it can be replayed."""
        if self._fd is None:
            return
        self._sync(time.monotonic())
        if self._size:
            os.rename(self._path, self._path[: -len(".open")] + ".seg")
        else:
            os.unlink(self._path)
        os.close(self._fd)  # releases the lock
        self._fd = None

    # -- reading -----------------------------------------------------------------------------------
    def _segments(self) -> list[str]:
        names = [n for n in os.listdir(self.directory) if n.endswith((".seg", ".open"))]
        own = os.path.basename(self._path) if self._fd is not None else None
        return sorted(n for n in names if n != own)

    def batches(self) -> Generator[list[Record], None, None]:
        """Yield spooled batches oldest first; call ``ack()`` once the last one is delivered.

        A batch not acknowledged ends the iteration: it and the rest wait for the next replay.
        """
        assert fcntl is not None
        for name in self._segments():
            path = os.path.join(self.directory, name)
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    if os.fstat(fd).st_ino != os.stat(path).st_ino:
                        continue  # replayed and deleted by another process since we listed it
                except (BlockingIOError, FileNotFoundError):
                    continue  # a live writer, or another reader, has it
                self._replaying = fd
                if not (yield from self._replay_segment(fd, path)):
                    return
            finally:
                self._replaying = None
                os.close(fd)

    def ack(self) -> None:
        """Mark the batch last yielded by ``batches()`` as delivered."""
        self._acked = True

    def _replay_segment(self, fd: int, path: str) -> Generator[list[Record], None, bool]:
        ack_path = path.rsplit(".", 1)[0] + ".ack"
        offset = _read_offset(ack_path)
        size = os.fstat(fd).st_size
        while offset + _FRAME.size <= size:
            length, crc = _FRAME.unpack(os.pread(fd, _FRAME.size, offset))
            payload = os.pread(fd, length, offset + _FRAME.size)
            if len(payload) != length or zlib.crc32(payload) != crc:
                # A torn write (the writer died mid-frame): nothing after it can be trusted.
                _log.warning("obs-middleware: spool %s is damaged after byte %d", path, offset)
                break
            self._acked = False
            yield decode_records(payload)
            if not self._acked:
                return False
            offset += _FRAME.size + length
            _write_offset(ack_path, offset)
        for p in (path, ack_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        self.bytes = max(self.bytes - size, 0)
        return True

    def close(self) -> None:
        """Seal this process's segment."""
        self.seal()

    def after_fork(self) -> None:
        """In a forked child: let go of the parent's open segment and of the one it replays.

        Only the child's copies of the descriptors are closed: the ``flock`` belongs to the open
        file, which the parent still holds, so the parent keeps both segments; a copy left open
        would keep them locked (never replayed) for as long as the child lives.
        """
        for fd in (self._fd, self._replaying):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._replaying = None
        self._path = ""
        self._size = 0
        self._dirty = False


def _read_offset(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return int(f.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_offset(path: str, offset: int) -> None:
    with open(path, "wb") as f:
        f.write(str(offset).encode())
