"""Scenario ``ai``: the ``openai`` SDK's sync ``chat.completions.create`` against the emulator.

The emulator runs in its own process (``workloads._emulator``), so neither CPU time nor callgrind
charges its work to the measured one.
"""

# ruff: noqa: PLC0415

from __future__ import annotations

from pathlib import Path
from typing import Any

from _peers import DdtraceHandle, ObsHandle
from workloads._emulator import emulator_url

import obs_middleware as obs

from . import Bench


def build(config: str, workdir: Path) -> Bench:
    """One sync ``chat.completions.create`` per iteration under ``config``."""
    notes: list[str] = []
    handle: Any = None
    if config == "ddtrace":
        handle = DdtraceHandle()
        import ddtrace

        ddtrace.patch(openai=True)
        notes.append("patch(openai=True)")
    import openai

    if config == "obs":
        handle = ObsHandle(workdir)
        outcome = {o.name: o for o in obs.instrument_all(only=["openai"])}.get("openai")
        if outcome is None or outcome.status not in ("patched", "already"):
            raise RuntimeError(f"obs openai integration not active: {outcome}")
    elif config not in ("bare", "ddtrace"):
        raise ValueError(f"unknown config {config!r}")
    client = openai.OpenAI(api_key="sk-test", base_url=emulator_url() + "/v1", max_retries=0)
    messages = [{"role": "user", "content": "Say hello."}]
    create = client.chat.completions.create

    def run(n: int) -> None:
        for _ in range(n):
            create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]

    def validate() -> str:
        reply = create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
        assert reply.choices[0].message.content, reply
        return "ok"

    bench = Bench(run=run, validate=validate, notes=notes)
    if handle is not None:
        bench.flush = handle.flush
        bench.emitted = handle.emitted
    return bench
