"""Shared by the compat suites: a JSON-lines configuration undone after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from obs_middleware import _setup
from obs_middleware._core.config import PipelineOptions
from obs_middleware._core.metrics import registry


@pytest.fixture
def jsonl_config(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """``jsonl_config(**configure_kw)`` exports to a fresh jsonl file and returns its path."""
    registry.reset()
    path = tmp_path / "records.jsonl"
    with ExitStack() as stack:

        def configure(**kw: Any) -> Path:
            config = _setup.build_config(
                exporters=[f"jsonl:{path}"],
                pipeline=PipelineOptions(interval_s=0.05, flush_on_sigterm=False),
                **kw,
            )
            stack.enter_context(_setup.scoped(config))
            return path

        yield configure
    registry.reset()
