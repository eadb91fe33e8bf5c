"""The ``obs`` command's own options."""

from __future__ import annotations

import subprocess
import sys

import obs_middleware as obs


def test_version_prints_the_package_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "obs_middleware.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout.strip()) == (0, f"obs-middleware {obs.__version__}")
