"""Finished spans and events as the pipeline receives them, with nothing exporting them: for
tests that encode them (hypothesis tests cannot take the ``monkeypatch`` fixture)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from obs_middleware._core import span as _span


@contextlib.contextmanager
def collected() -> Iterator[list[Any]]:
    """Collect every span and event finished inside the block, in finish order."""
    items: list[Any] = []
    saved = _span.on_finish
    _span.on_finish = items.append
    try:
        yield items
    finally:
        _span.on_finish = saved
