"""The OpenAI emulator as a process of its own, so its CPU is never charged to the one measured.

It exits when its stdin closes, i.e. when the process that started it exits however it does.
"""

from __future__ import annotations

import os
import subprocess
import sys

_EMULATOR = """
import sys
from obs_middleware.testing.emulators.openai import OpenAIEmulator
with OpenAIEmulator(latency_s=0.0) as emu:
    print(emu.url, flush=True)
    sys.stdin.read()
"""
_children: list[subprocess.Popen[str]] = []


def emulator_url() -> str:
    """Start an emulator process (latency 0); its base URL (``http://127.0.0.1:PORT``)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _EMULATOR],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "DD_"))},
    )
    _children.append(proc)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        raise RuntimeError(f"emulator did not start: {url!r}")
    return url


def cleanup() -> None:
    """Stop the emulator processes this process started."""
    while _children:
        proc = _children.pop()
        proc.kill()
        proc.wait(5)
