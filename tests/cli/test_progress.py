"""Progress for the ``obs`` commands: a step longer than a second says what it is doing."""

from __future__ import annotations

import io
import time

from obs_middleware.cli._progress import after


def test_a_step_that_outlasts_the_delay_prints_its_message_once() -> None:
    out = io.StringIO()
    with after(0.05, "obs report: reading obs.db (3.2 MB)…", out):
        time.sleep(0.3)
    assert out.getvalue() == "obs report: reading obs.db (3.2 MB)…\n"


def test_a_quick_step_prints_nothing_even_later() -> None:
    out = io.StringIO()
    with after(0.05, "never", out):
        pass
    time.sleep(0.15)
    assert out.getvalue() == ""
