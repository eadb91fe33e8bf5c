"""Benchmark harness: every scenario x configuration runs in its own subprocess.

Worker side (``python benchmarks/_harness.py MODE SCENARIO CONFIG``, PYTHONHASHSEED=0):

- ``measure``: validate once, warm up, calibrate N so one repeat takes ``--target`` seconds, then
  ``--repeats`` repeats, each after ``gc.collect()``. A repeat times ``run(N)`` plus a final flush
  of the instrumentation with ``time.process_time`` (process CPU: every thread, so the export
  worker is charged) and ``perf_counter``. Prints one JSON object.
- ``callgrind``: run under ``valgrind --tool=callgrind --dump-before=os_getppid``; ``os.getppid()``
  marks segment boundaries, so callgrind dumps the instructions of exactly ``run(N1)`` + flush and
  ``run(N2)`` + flush (all threads). The slope between them cancels start-up and fixed costs.
- ``profile``: cProfile of the main thread and of every thread started afterwards (the export
  worker), reduced to obs-middleware's own functions.
- ``throughput export PATH``: spans per second of one export path (``_scenarios.EXPORT_PATHS``)
  on the calling thread, ``time.thread_time`` per round, its stages interleaved round by round.

Parent side: ``measure()``, ``callgrind()``, ``paired()``, ``profile()`` and ``throughput()``
start those workers.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _scenarios

import obs_middleware as obs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# The interpreter running the suite (``make bench``: .venv/bin/python) runs its workers too.
PYTHON = sys.executable
VALGRIND = "/usr/bin/valgrind"
SILENT = ("bare", "floor", "obs-noexport")  # configurations that export nothing by design


# == worker side ==============================================================================
_explicit_gc = [False]


def _collect() -> None:
    _explicit_gc[0] = True
    gc.collect()
    _explicit_gc[0] = False


def _gc_counter() -> Callable[[], tuple[int, int]]:
    """Automatic collections (gen 0, gen 2) so far; the harness's own ``gc.collect()`` excluded."""
    counts = [0, 0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and not _explicit_gc[0]:
            if info["generation"] == 0:
                counts[0] += 1
            elif info["generation"] == 2:
                counts[1] += 1

    gc.callbacks.append(on_gc)
    return lambda: (counts[0], counts[1])


def _setup(scenario: str, config: str, workdir: Path) -> tuple[Any, float]:
    t0 = time.perf_counter()
    bench = _scenarios.build(scenario, config, workdir)
    setup_ms = (time.perf_counter() - t0) * 1000
    before = bench.emitted()
    bench.check()
    bench.flush()
    if config not in SILENT and bench.emitted() <= before:
        raise AssertionError(f"{scenario}/{config}: nothing reached the exporter")
    return bench, setup_ms


def _user_time() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _timed(bench: Any, n: int) -> tuple[float, float, float]:
    """CPU (user + system), wall and user CPU seconds of ``run(n)`` plus a flush."""
    _collect()
    c0, w0, u0 = time.process_time(), time.perf_counter(), _user_time()
    bench.iterate(n)
    bench.flush()
    return time.process_time() - c0, time.perf_counter() - w0, _user_time() - u0


def _calibrate(bench: Any, target_s: float) -> int:
    n = 8
    while True:
        cpu, _, _ = _timed(bench, n)
        if cpu >= 0.05 or n >= 1 << 22:
            return max(1, round(n * target_s / max(cpu, 1e-9)))
        n *= 4


def _worker_measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    bench, setup_ms = _setup(args.scenario, args.config, workdir)
    n = args.n or _calibrate(bench, args.target)
    _timed(bench, max(1, n // 4))  # warm-up at the measured size
    gcs = _gc_counter()
    e0, (g0, g2) = bench.emitted(), gcs()
    cpu: list[float] = []
    wall: list[float] = []
    user: list[float] = []
    for _ in range(args.repeats):
        c, w, u = _timed(bench, n)
        cpu.append(c / n)
        wall.append(w / n)
        user.append(u / n)
    e1, (g0b, g2b) = bench.emitted(), gcs()
    lost = _scenarios.dropped()
    iters = n * args.repeats
    return {
        "cpu": cpu,
        "wall": wall,
        "user": user,
        "n": n,
        "repeats": args.repeats,
        "emitted_per_iter": (e1 - e0) / iters,
        "gc0_per_1k": (g0b - g0) * 1000 / iters,
        "gc2_per_1k": (g2b - g2) * 1000 / iters,
        "dropped": lost,
        "setup_ms": setup_ms,
        "notes": bench.notes,
    }


def _heap_padding(layout: int) -> list[object]:
    """Objects of assorted sizes, kept alive to move everything allocated after them.

    Where objects land changes the work glibc's malloc and CPython's type cache do: a change of
    code unrelated to a scenario moved the OpenAI call's count by ±25k instructions (0.4 %),
    deterministically for one layout. Several layouts give a median that follows the code.
    """
    return [bytearray(600 + 83 * i) for i in range(layout * 13)] + [
        [None] * (i % 7) for i in range(layout * 151)
    ]


def _worker_callgrind(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    padding = _heap_padding(args.layout)
    bench, _ = _setup(args.scenario, args.config, workdir)
    bench.iterate(args.warmup)
    bench.flush()
    gc.collect()
    os.getppid()  # marker: dump part 1 (start-up)
    bench.iterate(args.n1)
    bench.flush()
    os.getppid()  # marker: dump part 2 (segment N1)
    gc.collect()
    os.getppid()  # marker: dump part 3 (collection between the segments)
    bench.iterate(args.n2)
    bench.flush()
    os.getppid()  # marker: dump part 4 (segment N2)
    del padding
    return {"notes": bench.notes}


def _worker_profile(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    profiles: list[cProfile.Profile] = []
    original_run = threading.Thread.run

    def profiled_run(self: threading.Thread) -> None:
        p = cProfile.Profile(time.thread_time_ns, 1e-9)
        profiles.append(p)
        p.enable()
        try:
            original_run(self)
        finally:
            p.disable()

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    bench, _ = _setup(args.scenario, args.config, workdir)
    bench.iterate(args.warmup)
    bench.flush()
    main = cProfile.Profile(time.thread_time_ns, 1e-9)
    main.enable()
    bench.iterate(args.n)
    bench.flush()
    main.disable()
    obs.shutdown(10)  # the worker thread returns, so its profile is complete
    stats = pstats.Stats(main)
    for p in profiles:
        stats.add(p)
    return {"rows": _obs_rows(stats, args.n), "n": args.n}


def _worker_throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    try:
        path = _scenarios.export_path(args.config, workdir)
    except ImportError as exc:  # the [otlp] extra is optional
        return {"skipped": f"{exc.name or exc} not installed"}
    path.check()
    for stage in path.stages.values():  # warm-up
        path.reset()
        stage()
    rates: dict[str, list[float]] = {name: [] for name in path.stages}
    for _ in range(args.repeats):
        for name, stage in path.stages.items():
            path.reset()
            _collect()
            c0 = time.thread_time()
            stage()
            rates[name].append(path.spans / (time.thread_time() - c0))
    return {"rates": rates, "spans": path.spans, "notes": path.notes}


def _leaf() -> None:
    pass


def _caller() -> None:
    _leaf()


def _profiler_bias() -> tuple[float, float]:
    """Seconds the profiler itself adds per call to the callee and to its caller."""
    p = cProfile.Profile(time.thread_time_ns, 1e-9)
    n = 20_000
    p.enable()
    for _ in range(n):
        _caller()
    p.disable()
    raw = pstats.Stats(p).stats  # type: ignore[attr-defined]
    tt = {func[2]: v[2] for func, v in raw.items()}
    return tt["_leaf"] / n, max(tt["_caller"] / n - tt["_leaf"] / n, 0.0)


def _obs_rows(stats: pstats.Stats, n: int) -> list[dict[str, Any]]:
    """Self CPU time per obs-middleware function, and per C function it calls directly.

    Self time is corrected for the profiler's own per-call cost (calibrated on an empty
    function), so the figures approximate the unprofiled cost per iteration.
    """
    bias_self, bias_caller = _profiler_bias()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    subcalls: dict[Any, float] = {}
    for _func, (_cc, _nc, _tt, _ct, callers) in raw.items():
        for caller, info in callers.items():
            subcalls[caller] = subcalls.get(caller, 0) + info[1]

    def is_obs(func: tuple[str, int, str]) -> bool:
        return "obs_middleware" in func[0]

    def label(func: tuple[str, int, str]) -> str:
        path, line, name = func
        if path == "~":
            return name
        return f"{path.split('obs_middleware/', 1)[-1]}:{line} {name}"

    table: dict[str, list[float]] = {}
    for func, (_cc, nc, tt, _ct, callers) in raw.items():
        if is_obs(func):
            own = tt - nc * bias_self - subcalls.get(func, 0) * bias_caller
            row = table.setdefault(label(func), [0.0, 0.0])
            row[0] += max(own, 0.0)
            row[1] += nc
        elif func[0] == "~":  # a C function: charge the part called from obs code
            for caller, (_ccc, cnc, ctt, _cct) in callers.items():
                if is_obs(caller):
                    row = table.setdefault(f"{label(func)} <- {label(caller)}", [0.0, 0.0])
                    row[0] += max(ctt - cnc * bias_self, 0.0)
                    row[1] += cnc
    total = sum(r[0] for r in table.values()) or 1.0
    rows = [
        {"function": k, "share": v[0] / total, "us_per_iter": v[0] * 1e6 / n, "calls": v[1] / n}
        for k, v in table.items()
    ]
    rows.sort(key=lambda r: -r["share"])
    return rows


def _worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("measure", "callgrind", "profile", "throughput"))
    parser.add_argument("scenario")
    parser.add_argument("config")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--n1", type=int, default=100)
    parser.add_argument("--n2", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--layout", type=int, default=0)
    args = parser.parse_args(argv)
    worker = {
        "measure": _worker_measure,
        "callgrind": _worker_callgrind,
        "profile": _worker_profile,
        "throughput": _worker_throughput,
    }[args.mode]
    tmp = tempfile.mkdtemp(prefix="obs-bench-")
    try:
        result = worker(args, Path(tmp))
    finally:
        _scenarios.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    sys.stdout.write("\n@@RESULT@@" + json.dumps(result) + "\n")
    sys.stdout.flush()
    # Skip interpreter teardown (atexit flushes, peers' shutdown hooks): nothing is measured
    # there, and a peer stuck on its unreachable agent must not stall the run.
    os._exit(0)


# == parent side ==============================================================================
@dataclass
class Measurement:
    """CPU/wall time per item (seconds) from one worker process."""

    scenario: str
    config: str
    cpu: list[float]
    wall: list[float]
    n: int
    repeats: int
    emitted_per_iter: float
    gc0_per_1k: float
    gc2_per_1k: float
    dropped: float  # records obs-middleware dropped in the whole process (should be 0)
    setup_ms: float
    user: list[float] = field(default_factory=list)  # user CPU only: what instructions cost
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def user_median(self) -> float:
        return statistics.median(self.user)


@dataclass
class Instructions:
    """Callgrind instruction counts of one configuration (whole process, all threads)."""

    scenario: str
    config: str
    n1: int
    n2: int
    seg1: int
    seg2: int
    notes: list[str] = field(default_factory=list)
    layouts: list[float] = field(default_factory=list)  # per-iteration count of each heap layout

    @property
    def per_iter(self) -> float:
        return (self.seg2 - self.seg1) / (self.n2 - self.n1)


@dataclass
class Throughput:
    """Spans per second of one export path's stages, one sample per round (one process)."""

    path: str
    rates: dict[str, list[float]] = field(default_factory=dict)
    spans: int = 0  # spans per round
    notes: list[str] = field(default_factory=list)
    skipped: str = ""

    def median(self, stage: str) -> float:
        return statistics.median(self.rates[stage])


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OBS_", "DD_", "OTEL_", "PYTEST_")) or k.startswith("OBS_BENCH_")
    }
    env.update(PYTHONHASHSEED="0", **(extra or {}))
    return env


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> tuple[dict[str, Any], str]:
    proc = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )
    payload = proc.stdout.rpartition("\n@@RESULT@@")[2]
    if proc.returncode != 0 or not payload:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"worker failed ({proc.returncode}): {' '.join(cmd[-3:])}\n{tail}")
    return json.loads(payload.splitlines()[0]), proc.stderr


def _worker_cmd(mode: str, scenario: str, config: str, **opts: int | float) -> list[str]:
    cmd = [PYTHON, str(HERE / "_harness.py"), mode, scenario, config]
    for k, v in opts.items():
        cmd += [f"--{k}", str(v)]
    return cmd


def measure(scenario: str, config: str, *, repeats: int, target: float, n: int = 0) -> Measurement:
    """Run one ``measure`` worker; ``n=0`` calibrates N to ``target`` seconds per repeat."""
    data, _ = _run(
        _worker_cmd("measure", scenario, config, repeats=repeats, target=target, n=n),
        _env(),
        timeout=300,
    )
    return Measurement(scenario=scenario, config=config, **data)


def paired(
    scenario: str, a: str, b: str, *, pairs: int, repeats: int, n: int
) -> list[tuple[Measurement, Measurement]]:
    """``pairs`` interleaved runs of ``a`` and ``b`` (order alternating to cancel drift)."""
    out = []
    for i in range(pairs):
        first, second = (a, b) if i % 2 == 0 else (b, a)
        m1 = measure(scenario, first, repeats=repeats, target=0, n=n)
        m2 = measure(scenario, second, repeats=repeats, target=0, n=n)
        out.append((m1, m2) if first == a else (m2, m1))
    return out


def _callgrind_one(
    scenario: str, config: str, n1: int, n2: int, warmup: int, layout: int
) -> Instructions:
    with tempfile.TemporaryDirectory(prefix="obs-callgrind-") as tmp:
        out = Path(tmp) / "cg.out"
        cmd = [
            VALGRIND,
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-before=os_getppid",
            "--dump-line=no",
            "--compress-strings=no",
            *_worker_cmd("callgrind", scenario, config, n1=n1, n2=n2, warmup=warmup, layout=layout),
        ]
        # Export batches by size only: the worker's wall-clock wake-ups would fire ~50x more
        # often under valgrind than natively and make the per-batch cost non-deterministic.
        data, _ = _run(cmd, _env({"OBS_EXPORT_INTERVAL_S": "3600"}), timeout=900)
        parts = {}
        for i in (2, 4):
            text = Path(f"{out}.{i}").read_text()
            summary = next(ln for ln in text.splitlines() if ln.startswith("summary:"))
            parts[i] = int(summary.split()[1])
    return Instructions(scenario, config, n1, n2, parts[2], parts[4], data.get("notes", []))


def callgrind(
    jobs: Sequence[tuple[str, str, int, int, int]], *, warmup: int = 20
) -> dict[tuple[str, str], Instructions]:
    """Instructions per iteration for (scenario, config, N1, N2, layouts) jobs, two valgrinds at
    a time: each job runs once per heap layout (``_heap_padding``) and gives its median run.

    Start the longest jobs first: the pool then finishes with short ones on both cores.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            (scenario, config): [
                pool.submit(_callgrind_one, scenario, config, n1, n2, warmup, layout)
                for layout in range(layouts)
            ]
            for scenario, config, n1, n2, layouts in jobs
        }
        results = {}
        for job, runs in futures.items():
            done = sorted((f.result() for f in runs), key=lambda r: r.per_iter)
            median = done[len(done) // 2]
            median.layouts = [r.per_iter for r in done]
            results[job] = median
        return results


def profile(scenario: str, config: str, *, n: int) -> list[dict[str, Any]]:
    """obs-middleware's hot spots under cProfile (self time, both threads), per iteration."""
    data, _ = _run(_worker_cmd("profile", scenario, config, n=n), _env(), timeout=300)
    return list(data["rows"])


def throughput(path: str, *, repeats: int) -> Throughput:
    """Run one ``throughput`` worker: ``repeats`` rounds of every stage of ``path``."""
    data, _ = _run(_worker_cmd("throughput", "export", path, repeats=repeats), _env(), timeout=600)
    return Throughput(path=path, **data)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
