"""W1-W3 built for the in-process A/B (``_ab.py``): two bare apps and one instrumented, one process.

``build(workload, mode, workdir)`` configures obs-middleware for ``mode`` and returns a ``Setup``:
three ``Side``s (``bare``, ``bare2`` for the A/A, ``obs``) sharing one event loop, and what the
method needs to check them. Modes:

- ``default``: obs-middleware as a user gets it: ``configure()`` with the library's default
  sampling (read from the library, never set here), jsonl exporter writing to a file (an
  exporter has to be named; the file is the cheapest real one), ``ObsMiddleware`` and
  ``instrument_all()``;
- ``all``: the same with every span exported (``export_everything()``), checked at the end;
- ``none``: ``exporters="none"``: only what the request thread does;
- ``middleware-only``: ``ObsMiddleware`` alone, ``exporters="none"``, no ``instrument_all()``;
- ``floor``: not obs-middleware but the least instrumentation that times every request, query
  and AI call (``floor.py``): what any tracer pays at least.

The bare engines are made before ``instrument_all()`` and uninstrumented after each call of it
(it instruments every engine alive, see ``bare_engines``), the instrumented one after. W1's OpenAI
and httpx patches patch SDK classes that the bare apps use too, so W1 toggles them: the ``obs``
side's ``before()`` calls ``instrument_all()`` and its ``after()`` ``uninstrument_all()``, both
untimed; its engine is pinned with ``instrument_sqlalchemy(engine)`` so that it stays
instrumented through the toggle. W2 and W3 keep the patches on: they touch nothing on the bare
apps' path (``_ab`` checks that one bare request makes the same calls before any
instrumentation and during the run).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _peers import count_lines

import obs_middleware as obs

from . import _emulator, floor
from ._asgi import Driver

WORKLOADS = ("W1", "W2", "W3")
MODES = ("default", "all", "none", "middleware-only", "floor")
MODULES = {"W1": "w1_ai", "W2": "w2_crud", "W3": "w3_hello"}
DESCRIPTIONS = {
    "W1": "AI request: API-key lookup, openai AsyncOpenAI chat.completions.create against the "
    "emulator (other process), usage insert, JSON (SQLite in memory, StaticPool)",
    "W2": "CRUD request: 5 SQLAlchemy core queries (SQLite in memory, StaticPool) + 50-item JSON",
    "W3": "hello request: Starlette GET /items/{item_id} -> small JSONResponse",
}


def _nothing() -> None:
    pass


async def _no_content(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@dataclass
class Side:
    """One app of the A/B: ``run(n)`` makes n requests; ``before``/``after`` run untimed."""

    name: str
    driver: Driver
    check_body: Callable[[bytes], None]
    before: Callable[[], None] = _nothing
    after: Callable[[], None] = _nothing

    def run(self, n: int) -> None:
        """Make ``n`` requests."""
        self.driver.run(n)

    def check(self) -> None:
        """One request, toggled like a batch: status 200 and the expected body."""
        self.before()
        try:
            self.driver.check(self.check_body)
        finally:
            self.after()


@dataclass
class Setup:
    """The three sides of one workload x mode, and what the method checks about them."""

    workload: str
    mode: str
    bare: Side
    bare2: Side
    obs: Side
    export_file: Path | None  # the jsonl file (None: nothing exported)
    notes: list[str] = field(default_factory=list)
    toggles: bool = False  # the obs side patches/unpatches the SDK around its batches
    bare_calls: int = 0  # calls of one bare request before any instrumentation existed
    bare_snapshot: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def exported(self) -> int:
        """Records exported so far (0 when nothing is)."""
        return 0 if self.export_file is None else count_lines(self.export_file)


def sampling_options() -> Any:
    """The library's sampling options type (top level once exported there)."""
    options = getattr(obs, "SamplingOptions", None)
    if options is None:
        from obs_middleware._core.config import SamplingOptions  # noqa: PLC0415

        options = SamplingOptions
    return options


def export_everything() -> Any:
    """Sampling options that export every span: the defaults with a head ratio of 1 and, where
    the library has adaptive export, no rate limit (``traces_per_s=0``).

    If a later default limits the export by yet another option, ``_ab`` sees spans missing in
    ``all`` mode and stops with an error rather than flatter the figure.
    """
    options = sampling_options()
    unlimited = (
        {"traces_per_s": 0}
        if "traces_per_s" in {f.name for f in dataclasses.fields(options)}
        else {}
    )
    return dataclasses.replace(options(), ratio=1.0, **unlimited)


def _configure(mode: str, workdir: Path) -> Path | None:
    if mode in ("none", "middleware-only", "floor"):
        obs.configure(service="bench", exporters="none")
        return None
    path = workdir / "obs.jsonl"
    sampling = export_everything() if mode == "all" else None
    obs.configure(service="bench", exporters=[f"jsonl:{path}"], sampling=sampling)
    return path


# The bare apps' engines: instrument_all() finds and instruments the engines alive when it runs,
# so each call is followed by uninstrumenting these.
bare_engines: list[Any] = []


def _instrument_all() -> list[str]:
    report = obs.instrument_all()
    for engine in bare_engines:
        obs.uninstrument_sqlalchemy(engine)
    return [o.name for o in report if o.status in ("patched", "already")]


def _toggle_on() -> None:
    _instrument_all()


def _toggle_off() -> None:
    obs.uninstrument_all()


def build(workload: str, mode: str, workdir: Path) -> Setup:
    """Configure obs-middleware for ``mode`` and build ``workload``'s three sides.

    Before any instrumentation exists, the bare side is warmed up and its path recorded
    (``bare_calls``, ``bare_snapshot``), so ``_ab`` can check that it stays the same.
    """
    if workload not in WORKLOADS or mode not in MODES:
        raise ValueError(f"unknown workload/mode {workload!r}/{mode!r}: {WORKLOADS} x {MODES}")
    module = importlib.import_module(f"workloads.{MODULES[workload]}")
    export_file = _configure(mode, workdir)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    url = _emulator.emulator_url() if workload == "W1" else ""

    def side(name: str, app: Any) -> Side:
        return Side(name, Driver(app, loop=loop, **module.REQUEST), module.check)

    bare_app, bare_engine = module.new_app(url)
    bare2_app, bare2_engine = module.new_app(url)
    bare_engines[:] = [e for e in (bare_engine, bare2_engine) if e is not None]  # W3 has none
    bare = side("bare", bare_app)
    bare2 = side("bare2", bare2_app)
    # The event-loop delay probe (runtime metrics) keeps a timer in the loop every side shares,
    # from the first request an ObsMiddleware serves on it: start it before the bare path is
    # recorded, so that a bare request's own timers (W1: the SDK's timeouts) meet it both times.
    Driver(obs.ObsMiddleware(_no_content), loop=loop, **module.REQUEST).call_once()
    obs.flush(10.0)  # its span is exported before any side's records are counted
    for _ in range(5):  # first requests open connections, compile routes, fill caches
        bare.driver.call_once()
    bare_calls = call_count(bare)
    bare_snapshot = sdk_snapshot()
    if mode == "floor":
        notes = [floor.NOTE]
        floored = side("obs", floor.new_app(module, url))
        return Setup(
            workload, mode, bare, bare2, floored, None, notes, False, bare_calls, bare_snapshot
        )
    integrations = mode != "middleware-only"
    notes = [f"sampling {obs_sampling()}" if export_file else "exporters=none"]
    if integrations:
        notes.append("instrument_all: " + ", ".join(_instrument_all()))
    app, engine = module.new_app(url)  # its engine is made after instrument_all()
    app.add_middleware(obs.ObsMiddleware)
    instrumented = side("obs", app)
    toggles = workload == "W1" and integrations
    if toggles:
        # Pinned (made explicitly instrumented), so uninstrument_all() leaves this engine alone.
        obs.instrument_sqlalchemy(engine)
        obs.uninstrument_all()
        instrumented.before, instrumented.after = _toggle_on, _toggle_off
        notes.append("SDK patches toggled around each obs batch")
    if export_file is not None:
        notes.append(_steady_limiter(instrumented))
    return Setup(
        workload,
        mode,
        bare,
        bare2,
        instrumented,
        export_file,
        notes,
        toggles,
        bare_calls,
        bare_snapshot,
    )


class ObsClock:
    """A monotonic clock that runs only while the obs side runs its batches."""

    def __init__(self) -> None:
        self.total = 0.0
        self.started: float | None = None

    def __call__(self) -> float:
        running = 0.0 if self.started is None else time.monotonic() - self.started
        return self.total + running

    def resume(self) -> None:
        """The obs batch starts."""
        self.started = time.monotonic()

    def pause(self) -> None:
        """The obs batch ended."""
        if self.started is not None:
            self.total += time.monotonic() - self.started
            self.started = None


def _steady_limiter(side: Side) -> str:
    """Give adaptive export's rate limiter a clock that runs only during the obs batches.

    The limiter estimates the rate of new traces per second of its clock. On the wall clock it
    would see the obs app's traces spread over the bare batches too, in bursts shorter than its
    window, and export several times more than a server running this app at the same rate does
    (W2: 3.4 of 6 records per request, W1: 4.0 of 4, where a steady server would export a few
    percent). On the obs side's own clock it sees the steady rate of that app alone. Reaches
    into ``_setup._limiters`` (the benchmark's business, not an API); without a limiter (a fixed
    ratio, an older library) nothing changes.
    """
    from obs_middleware import _setup  # noqa: PLC0415

    limiter = getattr(_setup, "_limiters", {}).get(_setup.current_pipeline())
    if limiter is None:
        return "no adaptive rate limiter"
    clock = ObsClock()
    limiter._clock = clock
    limiter._since = clock()
    before, after = side.before, side.after

    def resume() -> None:
        before()
        clock.resume()

    def pause() -> None:
        clock.pause()
        after()

    side.before, side.after = resume, pause
    return f"adaptive export: the rate limiter ({limiter.limit:g} traces/s) runs on obs-batch time"


def obs_sampling() -> str:
    """The sampling options in force, as configured."""
    from obs_middleware._setup import current_config  # noqa: PLC0415

    return repr(current_config().sampling)


# -- is the bare path really bare? ---------------------------------------------------------------
_WATCHED = ("openai", "httpx", "httpx2", "httpcore", "sqlalchemy", "starlette", "logging", "anyio")


def sdk_snapshot() -> dict[tuple[str, str, str], int]:
    """Identity of every module- and class-level attribute of the libraries the apps use.

    A patch replaces one of them; an undone patch puts the original object back.
    """
    snap: dict[tuple[str, str, str], int] = {}
    for name, module in list(sys.modules.items()):
        if module is None or name.partition(".")[0] not in _WATCHED:
            continue
        for attr, value in list(vars(module).items()):
            if _patchable(attr, value):
                snap[(name, "", attr)] = id(value)
            if isinstance(value, type) and value.__module__ == name:
                for cattr, cvalue in list(vars(value).items()):
                    if _patchable(cattr, cvalue):
                        snap[(name, attr, cattr)] = id(cvalue)
    return snap


def _patchable(name: str, value: object) -> bool:
    """Functions, methods and descriptors: what a patch replaces. Pydantic's lazily built model
    internals (``__pydantic_*``) change on first use and are no patch."""
    return not name.startswith("__pydantic") and (
        callable(value) or hasattr(type(value), "__get__")
    )


def snapshot_diff(
    before: dict[tuple[str, str, str], int], after: dict[tuple[str, str, str], int]
) -> list[str]:
    """Attributes present in both snapshots whose object changed."""
    return [".".join(filter(None, k)) for k, v in before.items() if k in after and after[k] != v]


def call_count(side: Side) -> int:
    """Python and C calls made by one request of ``side`` (deterministic: no clock involved)."""
    count = 0

    def profiler(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    side.before()
    sys.setprofile(profiler)
    try:
        side.driver.call_once()
    finally:
        sys.setprofile(None)
        side.after()
    return count


def cleanup() -> None:
    """Stop the emulator processes."""
    _emulator.cleanup()
