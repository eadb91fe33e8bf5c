"""Shared fixtures: a throwaway configuration that is undone after each test."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from obs_middleware import _delivery, _setup
from obs_middleware._core import events
from obs_middleware._core import span as _span
from obs_middleware._core.config import Config, PipelineOptions, SamplingOptions
from obs_middleware._core.metrics import registry
from obs_middleware._pipeline import Pipeline


@pytest.fixture(autouse=True)
def _no_current_span() -> None:
    """Each test starts outside any span, whatever an earlier test leaked."""
    _span._current.set(None)


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Config]]:
    """``configured(**configure_kw)`` activates a configuration; the previous one is restored after.

    Unlike ``obs.configure`` it never installs a SIGTERM handler, and every pipeline it made is
    shut down at teardown (its worker thread ends).
    """
    for var in [v for v in os.environ if v.startswith("OBS_")]:
        monkeypatch.delenv(var)
    registry.reset()
    made: list[Pipeline] = []
    with contextlib.ExitStack() as stack:

        def configure(**kw: Any) -> Config:
            kw.setdefault("pipeline", PipelineOptions(interval_s=0.05, flush_on_sigterm=False))
            kw.setdefault("sampling", SamplingOptions(traces_per_s=0))  # every trace, as capture()
            config = _setup.build_config(**kw)
            made.append(stack.enter_context(_setup.scoped(config)))
            if len(made) > 1:  # as configure() does: the replaced pipeline flushes and stops
                made[-2].shutdown(2.0)
            return config

        yield configure
    registry.reset()


@pytest.fixture
def handlers() -> Iterator[Callable[..., None]]:
    """``handlers(handler_id, prefix, fn, **options)`` attaches a handler detached at teardown."""
    ids: list[str] = []

    def attach(
        handler_id: str, prefix: str, fn: Callable[[str, dict[str, Any]], None], **options: Any
    ) -> None:
        ids.append(handler_id)
        events.attach(handler_id, prefix, fn, **options)

    yield attach
    for handler_id in ids:
        with contextlib.suppress(Exception):
            events.detach(handler_id)


class HungBackend:
    """A loopback HTTP backend that reads every request and never answers (a hung collector)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.received = threading.Event()  # set once a request's first bytes arrived
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self._connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                self.received.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):
                conn.close()


@pytest.fixture
def hung_backend() -> Iterator[HungBackend]:
    """A backend that accepts requests and never answers; closed at teardown."""
    backend = HungBackend()
    yield backend
    backend.close()


@pytest.fixture
def closed_port() -> Iterator[str]:
    """The URL of a loopback port where nothing listens (connections are refused at once).

    The port stays bound, without listening, for the test: no other process can take it.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(autouse=True)
def _backends_waited_on_again() -> Iterator[None]:
    """A test that stopped waiting on backends (``obs.shutdown()``) does not leak it."""
    yield
    _delivery.resume()
