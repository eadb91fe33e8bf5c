"""Scenario ``asgi``: the hello request (workload W3) under each ASGI configuration."""

from __future__ import annotations

from pathlib import Path

from workloads import w3_hello

from . import Bench, asgi_bench, instrument


def build(config: str, workdir: Path) -> Bench:
    """W3's app with ``config``'s middleware."""
    app = w3_hello.build_app()
    handle = instrument(app, config, workdir)
    return asgi_bench(app, handle, w3_hello.PATH, w3_hello.check)
