"""pytest plugin: the ``obs_capture`` fixture (registered through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._capture import Capture, capture

__all__ = ["obs_capture"]


@pytest.fixture
def obs_capture() -> Iterator[Capture]:
    """Every span, event and metric the test produces, with deterministic ids and clock."""
    with capture() as cap:
        yield cap
