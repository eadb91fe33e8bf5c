"""What ``make bench`` runs: the plan (full or quick), the shared results, the gates and the report.

The overhead gates of issue 15 (whole requests, in-process A/B and under load) have their own
plan and results in ``_gates.py``; this module holds the scenario tables, the callgrind
diagnostics and the export throughput gates.

Results are memoized per session, so every test asks for what it needs (a gate run alone with
``-k`` still measures its inputs) and nothing is measured twice. The report is printed at the end
of the session and written to ``.benchmarks/obs-bench-last.{md,json}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import _harness
from _scenarios import BASELINE, EXPORT_PATHS, EXPORT_STAGES, ITEM, LABELS, SCENARIOS

QUICK = os.environ.get("OBS_BENCH_QUICK", "") not in ("", "0")

# The budgets left here (never loosen them to make a run pass). Issue 15 retired the per-µs budgets
# of the Starlette request, the span, the realistic request, the query and the OpenAI call (they
# stay as diagnostics); its request gates live in ``_gates.py``.
LITESTAR_BUDGET_US = 1.0  # Litestar obs overhead minus Starlette obs overhead (issue 5)
# A minimum: finished spans -> the bytes sent, on one core: jsonl, Tinybird, ClickHouse, OTLP.
EXPORT_BUDGET = 300_000.0  # spans/s (issue 15)


@dataclass(frozen=True)
class Plan:
    """How much to measure. ``quick`` is for iterating; gates are judged on the full plan."""

    repeats: int  # repeats per table process
    target: float  # seconds per repeat (calibrated N)
    span_repeats: int
    asgi_pairs: int  # interleaved bare/obs process pairs for the Starlette request (reported)
    real_pairs: int  # same for the realistic request's CPU figure (reported, not gated)
    ai_pairs: int  # same for the OpenAI call's CPU figure (reported, not gated)
    pair_repeats: int
    export_procs: int  # processes pooled for the export throughput gates
    export_rounds: int  # rounds of every stage per process
    callgrind_n: dict[str, tuple[int, int]]  # scenario -> (N1, N2) for the instruction slope
    callgrind_layouts: dict[str, int]  # scenario -> heap layouts measured (median); default 1
    profile_n: dict[str, int]


FULL_PLAN = Plan(
    repeats=7,
    target=0.2,
    span_repeats=9,
    asgi_pairs=4,
    real_pairs=4,
    ai_pairs=4,
    pair_repeats=5,
    export_procs=3,
    export_rounds=9,
    callgrind_n={
        "real": (50, 200),
        "asgi": (100, 500),
        "span": (10, 40),
        "sql": (4, 16),
        "litestar": (100, 500),
        "ai": (20, 140),  # a call is ~6.4M instructions: 30 calls left ±15k of noise per call
    },
    # The OpenAI call's and the realistic request's counts move by up to ±25k per item with the
    # heap layout alone (0.4 % of the SDK's 6.4M, of the request's 4.1M); the other scenarios'
    # bare counts are 30-60x smaller.
    callgrind_layouts={"ai": 3, "real": 3},
    profile_n={"asgi": 20_000, "span": 300, "real": 1_000},
)
QUICK_PLAN = Plan(
    repeats=3,
    target=0.05,
    span_repeats=5,
    asgi_pairs=2,
    real_pairs=1,
    ai_pairs=1,
    pair_repeats=3,
    export_procs=1,
    export_rounds=3,
    callgrind_n={
        "real": (20, 60),
        "asgi": (50, 150),
        "span": (4, 12),
        "sql": (2, 6),
        "litestar": (50, 150),
        "ai": (5, 15),
    },
    callgrind_layouts={},
    profile_n={"asgi": 5_000, "span": 80, "real": 200},
)
PLAN = QUICK_PLAN if QUICK else FULL_PLAN
if os.environ.get("OBS_BENCH_PLAN") == "ci":  # make bench-ci: the export gates in one process
    PLAN = replace(PLAN, export_procs=1)

# Longest first (see ``_harness.callgrind``): the openai SDK's import alone is ~30 s under valgrind.
CALLGRIND_JOBS = (
    ("ai", "bare"),
    ("ai", "obs"),
    ("real", "bare"),
    ("real", "obs"),
    ("real", "obs-noexport"),
    ("real", "obs-middleware-only"),
    ("asgi", "bare"),
    ("asgi", "obs"),
    ("asgi", "obs-noexport"),
    ("span", "floor"),
    ("span", "floor-export"),
    ("span", "obs"),
    ("span", "obs-noexport"),
    ("sql", "bare"),
    ("sql", "obs"),
    ("litestar", "bare"),
    ("litestar", "obs"),
)


# The quick plan counts instructions for the instruction gates only.
JOBS = (
    tuple(
        j
        for j in CALLGRIND_JOBS
        if j[0] != "span" and (j[1] in ("bare", "obs") or j == ("real", "obs-middleware-only"))
    )
    if QUICK
    else CALLGRIND_JOBS
)


def items_per_iter(scenario: str) -> int:
    return SCENARIOS[scenario][2]


def scale(scenario: str) -> float:
    """Seconds per item -> the scenario's display unit."""
    return 1e9 if SCENARIOS[scenario][1] == "ns" else 1e6


@dataclass
class Gate:
    name: str
    value: float
    budget: float
    unit: str
    how: str
    passed: bool


@dataclass
class Results:
    """Everything measured in this session."""

    measurements: dict[tuple[str, str], _harness.Measurement] = field(default_factory=dict)
    pairs: dict[str, list[tuple[_harness.Measurement, _harness.Measurement]]] = field(
        default_factory=dict
    )
    instructions: dict[tuple[str, str], _harness.Instructions] = field(default_factory=dict)
    hotspots: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    throughput: dict[str, list[_harness.Throughput]] = field(default_factory=dict)
    gates: dict[str, Gate] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    phase_s: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- measuring (memoized) ----------------------------------------------------------------
    def measurement(self, scenario: str, config: str) -> _harness.Measurement:
        key = (scenario, config)
        if key not in self.measurements:
            repeats = PLAN.span_repeats if scenario == "span" and config == "obs" else PLAN.repeats
            with self.phase("table"):
                self.measurements[key] = _harness.measure(
                    scenario, config, repeats=repeats, target=PLAN.target
                )
        return self.measurements[key]

    def paired(self, scenario: str, pairs: int) -> list[tuple[_harness.Measurement, ...]]:
        if scenario not in self.pairs:
            base = BASELINE[scenario]
            n = self.measurement(scenario, base).n
            with self.phase("pairs"):
                self.pairs[scenario] = _harness.paired(
                    scenario, base, "obs", pairs=pairs, repeats=PLAN.pair_repeats, n=n
                )
        return self.pairs[scenario]  # type: ignore[return-value]

    def instruction_counts(self) -> dict[tuple[str, str], _harness.Instructions]:
        """All callgrind jobs at once (two valgrinds in parallel), after every CPU timing."""
        with self.lock:
            if not self.instructions:
                with self.phase("callgrind"):
                    self.instructions = _harness.callgrind(
                        [
                            (s, c, *PLAN.callgrind_n[s], PLAN.callgrind_layouts.get(s, 1))
                            for s, c in JOBS
                        ]
                    )
        return self.instructions

    def export_runs(self, path: str) -> list[_harness.Throughput]:
        """``PLAN.export_procs`` processes of one export path (a skipped path runs once)."""
        if path not in self.throughput:
            runs: list[_harness.Throughput] = []
            with self.phase("throughput"):
                while len(runs) < PLAN.export_procs and not (runs and runs[0].skipped):
                    runs.append(_harness.throughput(path, repeats=PLAN.export_rounds))
            self.throughput[path] = runs
        return self.throughput[path]

    def hot_spots(self, scenario: str) -> list[dict[str, Any]]:
        if scenario not in self.hotspots:
            self.hotspots[scenario] = _harness.profile(scenario, "obs", n=PLAN.profile_n[scenario])
        return self.hotspots[scenario]

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        try:
            yield
        finally:
            self.phase_s[name] = self.phase_s.get(name, 0.0) + time.monotonic() - t0

    def gate(self, gate: Gate) -> Gate:
        self.gates[gate.name] = gate
        return gate


RESULTS = Results()


# -- pytest-benchmark bridge --------------------------------------------------------------------
class Replay:
    """A clock that replays per-item CPU samples measured in a worker process.

    Passed as the pytest-benchmark timer (``@pytest.mark.benchmark(timer=REPLAY.clock)``) and
    driven by ``benchmark.pedantic(REPLAY.step, rounds=len(samples))``, so pytest-benchmark's own
    statistics, table and ``--benchmark-json`` show the worker's CPU time per item, not the
    parent's wall time spent waiting for the subprocess.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.samples: list[float] = []

    def clock(self) -> float:
        return self.now

    def load(self, samples: list[float]) -> int:
        self.samples = list(samples)
        return len(self.samples)

    def step(self) -> None:
        self.now += self.samples.pop(0)


REPLAY = Replay()


def table_run(benchmark: Any, scenario: str, config: str) -> _harness.Measurement:
    """Measure one configuration for the side-by-side table and hand it to pytest-benchmark."""
    m = RESULTS.measurement(scenario, config)
    per = items_per_iter(scenario)
    rounds = REPLAY.load([c / per for c in m.cpu])
    benchmark.pedantic(REPLAY.step, rounds=rounds, iterations=1)
    base = RESULTS.measurements.get((scenario, BASELINE[scenario]))
    benchmark.extra_info.update(
        config=LABELS[config],
        unit=SCENARIOS[scenario][1],
        cpu_median=m.median / per * scale(scenario),
        wall_median=statistics.median(m.wall) / per * scale(scenario),
        emitted_per_iter=m.emitted_per_iter,
        n=m.n,
        repeats=m.repeats,
        notes=m.notes,
    )
    if base is not None:
        benchmark.extra_info["ratio"] = m.median / base.median
    return m


# -- report -------------------------------------------------------------------------------------
def _fmt(x: float, unit: str) -> str:
    if unit in ("ns", "instr", "spans/s"):
        return f"{x:,.0f}"
    if unit == "%":
        return f"{x:.2f}"
    return f"{x:,.1f}" if abs(x) >= 10 else f"{x:,.2f}"


def _cpu_table(scenario: str) -> list[str]:
    desc, unit, per, configs = SCENARIOS[scenario]
    if not any((scenario, c) in RESULTS.measurements for c in configs):
        return []  # not run (``-k``, or only the export throughput file)
    k = scale(scenario) / per
    base = RESULTS.measurements.get((scenario, BASELINE[scenario]))
    what = ITEM.get(scenario, "request")
    lines = [
        f"| config | CPU {unit}/{what} median | min | max | wall {unit}/{what} | "
        f"overhead {unit} | ratio | spans exported/{'root' if per > 1 else what} "
        f"| GC gen0/gen2 per 1k | N x R |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config in configs:
        m = RESULTS.measurements.get((scenario, config))
        if m is None:
            continue
        over = ratio = "-"
        if base is not None and config != BASELINE[scenario]:
            over = ("+" if m.median >= base.median else "") + _fmt(
                (m.median - base.median) * k, unit
            )
            ratio = f"{m.median / base.median:.2f}x"
        emitted = "-" if config in _harness.SILENT else f"{m.emitted_per_iter:g}"
        if m.dropped:
            emitted += f" (**{m.dropped:,.0f} dropped**)"
        label = LABELS[config] + (f" ({'; '.join(m.notes)})" if m.notes else "")
        lines.append(
            f"| {label} | **{_fmt(m.median * k, unit)}** | {_fmt(min(m.cpu) * k, unit)} | "
            f"{_fmt(max(m.cpu) * k, unit)} | {_fmt(statistics.median(m.wall) * k, unit)} | "
            f"{over} | {ratio} | {emitted} | {m.gc0_per_1k:.1f} / {m.gc2_per_1k:.2f} | "
            f"{m.n}x{m.repeats} |"
        )
    return [f"#### {desc}", "", *lines, ""]


def _pairs_lines(scenario: str) -> list[str]:
    pairs = RESULTS.pairs.get(scenario)
    if not pairs:
        return []
    _, unit, per, _ = SCENARIOS[scenario]
    k = scale(scenario) / per
    diffs = [(o.median - b.median) * k for b, o in pairs]
    bases = [b.median * k for b, _ in pairs]
    med = statistics.median(diffs)
    base = statistics.median(bases)
    return [
        f"Interleaved bare/obs process pairs ({len(pairs)} pairs x {PLAN.pair_repeats} repeats): "
        f"overhead median **{_fmt(med, unit)} {unit}** ({med / base * 100:+.2f} % of bare "
        f"{_fmt(base, unit)} {unit}); per pair: {', '.join(_fmt(d, unit) for d in diffs)}.",
        "",
    ]


def _instr_lines(scenario: str) -> list[str]:
    counts = RESULTS.instructions
    base_key = (scenario, BASELINE[scenario])
    if base_key not in counts:
        return []
    _, unit, per, _ = SCENARIOS[scenario]
    base = counts[base_key].per_iter / per
    m = RESULTS.measurements.get(base_key)
    # Instructions -> time at the baseline's own rate (same interpreter-bound kind of code).
    rate = base / (m.median / per * scale(scenario)) if m else None
    n1, n2 = counts[base_key].n1, counts[base_key].n2
    what = ITEM.get(scenario, "request")
    lines = [
        f"Instructions per {what} (callgrind, whole process incl. export thread, slope between "
        f"N={n1} and N={n2} iterations, PYTHONHASHSEED=0):",
        "",
        f"| config | instructions/{what} | over baseline | share | ~{unit} at baseline rate |",
        "|---|---|---|---|---|",
    ]
    for (sc, config), ins in counts.items():
        if sc != scenario:
            continue
        v = ins.per_iter / per
        if config == BASELINE[scenario]:
            lines.append(f"| {LABELS[config]} | {v:,.0f} | - | - | - |")
            continue
        est = f"{_fmt((v - base) / rate, unit)}" if rate else "-"
        lines.append(
            f"| {LABELS[config]} | {v:,.0f} | +{v - base:,.0f} | {(v - base) / base * 100:+.2f} % "
            f"| {est} |"
        )
    return [*lines, ""]


def _hot_lines(scenario: str) -> list[str]:
    rows = RESULTS.hotspots.get(scenario)
    if not rows:
        return []
    _, unit, per, _ = SCENARIOS[scenario]
    what = ITEM.get(scenario, "request")
    base = RESULTS.instructions.get((scenario, BASELINE[scenario]))
    full = RESULTS.instructions.get((scenario, "obs"))
    if base and full:
        # cProfile's absolute times are inflated (profiling, a shared machine); its shares are
        # not, so they split the deterministic callgrind overhead.
        over = (full.per_iter - base.per_iter) / per
        head = f"~instructions/{what} (share x callgrind overhead {over:,.0f})"
        values = [f"{r['share'] * over:,.0f}" for r in rows]
    else:
        k = 1 if unit == "us" else 1000
        head = f"{unit}/{what} under cProfile (inflated)"
        values = [_fmt(r["us_per_iter"] / per * k, unit) for r in rows]
    lines = [
        f"Hot spots in obs-middleware ({scenario}): cProfile self time with a per-thread CPU "
        "clock, corrected for the profiler's per-call cost, both threads, C functions charged "
        "to their obs-middleware caller:",
        "",
        f"| share of obs self time | {head} | calls/iter | function |",
        "|---|---|---|---|",
    ]
    for r, v in zip(rows[:15], values, strict=False):
        lines.append(f"| {r['share'] * 100:.1f} % | {v} | {r['calls']:.2f} | `{r['function']}` |")
    return [*lines, ""]


def export_rates(path: str, stage: str) -> list[float]:
    """Spans/s of every round of ``stage``, pooled over the path's processes."""
    return [r for run in RESULTS.export_runs(path) for r in run.rates[stage]]


def _export_lines() -> list[str]:
    if not RESULTS.throughput:
        return []
    lines = [
        "### Export throughput (one core)",
        "",
        "Spans per second on the calling thread (`time.thread_time`), the HTTP + AI mix in "
        "batches of 512, every stage once per round in turn; gates: median of every round of "
        "every process.",
        "",
        "| path | stage | spans/s median | min | max | µs/span | spans/round | rounds x processes "
        "| notes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path, runs in RESULTS.throughput.items():
        if runs[0].skipped:
            lines.append(f"| {path} | - | skipped | | | | | | {runs[0].skipped} |")
            continue
        for stage in EXPORT_PATHS[path][1]:
            rates = export_rates(path, stage)
            med = statistics.median(rates)
            lines.append(
                f"| {path} | {EXPORT_STAGES[stage]} | **{med:,.0f}** | {min(rates):,.0f} | "
                f"{max(rates):,.0f} | {1e6 / med:.2f} | {runs[0].spans:,} | "
                f"{len(runs[0].rates[stage])} x {len(runs)} | {'; '.join(runs[0].notes)} |"
            )
    return [*lines, ""]


def report(overhead: str = "") -> str:
    """The side-by-side report; ``overhead``: the section of ``_gates`` (put first)."""
    titles = {
        "asgi": "Starlette request",
        "span": "obs.span (nested, 3 attributes)",
        "real": "Realistic request",
        "sql": "SQLAlchemy query",
        "litestar": "Litestar request",
        "ai": "OpenAI SDK call",
    }
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in RESULTS.phase_s.items())
    out = [
        f"### Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"({os.environ.get('OBS_BENCH_PLAN') or ('quick' if QUICK else 'full')} plan, "
        f"{time.monotonic() - RESULTS.started:.0f} s: "
        f"{phases})",
        "",
    ]
    if overhead:
        out += [overhead, ""]
    for scenario, title in titles.items():
        block = [
            *_cpu_table(scenario),
            *_pairs_lines(scenario),
            *_instr_lines(scenario),
            *_hot_lines(scenario),
        ]
        if any(line.startswith("|") for line in block):
            out += [f"### {title}", "", *block]
    out += _export_lines()
    if RESULTS.gates:
        out += [
            "### Gates",
            "",
            "| gate | measured | budget | how | result |",
            "|---|---|---|---|---|",
        ]
        for g in RESULTS.gates.values():
            value, budget = _fmt(g.value, g.unit), _fmt(g.budget, g.unit)
            out.append(
                f"| {g.name} | {value} {g.unit} | {budget} {g.unit} | {g.how} "
                f"| {'PASS' if g.passed else '**FAIL**'} |"
            )
        out.append("")
    return "\n".join(out)


def save(text: str) -> Path:
    folder = _harness.ROOT / ".benchmarks"
    folder.mkdir(exist_ok=True)
    (folder / "obs-bench-last.md").write_text(text + "\n")
    raw = {
        "plan": asdict(PLAN),
        "measurements": {f"{s}/{c}": asdict(m) for (s, c), m in RESULTS.measurements.items()},
        "pairs": {s: [[asdict(b), asdict(o)] for b, o in p] for s, p in RESULTS.pairs.items()},
        "instructions": {
            f"{s}/{c}": {**asdict(i), "per_iter": i.per_iter}
            for (s, c), i in RESULTS.instructions.items()
        },
        "hotspots": RESULTS.hotspots,
        "throughput": {p: [asdict(t) for t in runs] for p, runs in RESULTS.throughput.items()},
        "gates": {k: asdict(g) for k, g in RESULTS.gates.items()},
    }
    (folder / "obs-bench-last.json").write_text(json.dumps(raw, indent=1))
    return folder / "obs-bench-last.md"


@dataclass
class InstrOverhead:
    """obs's instruction overhead per item, and that overhead in µs at the baseline's rate.

    The rate is the baseline's instructions per µs of *user* CPU: callgrind counts user-space
    instructions only, and the kernel time of a baseline doing I/O (the OpenAI call's loopback
    sockets) would otherwise lower the rate and inflate pure-Python overheads.
    """

    over: float  # instructions per item over the baseline
    base: float  # baseline instructions per item
    base_us: float  # baseline user CPU µs per item (pairs' median if measured, else the table's)
    base_cpu_us: float  # baseline CPU µs per item, user + system (reported)
    layouts: str = ""  # each heap layout's counts, where several were measured

    @property
    def us(self) -> float:
        return self.over * self.base_us / self.base

    def how(self) -> str:
        return (
            f"+{self.over:,.0f} instr over bare {self.base:,.0f} instr / {self.base_us:.2f} µs "
            f"user CPU ({self.base_cpu_us:.2f} µs with system time){self.layouts}"
        )


def instr_overhead(scenario: str, config: str = "obs") -> InstrOverhead:
    """Callgrind overhead of ``config`` over the baseline, per item (query, request, call)."""
    counts = RESULTS.instruction_counts()
    per = items_per_iter(scenario)
    bare, full = counts[(scenario, BASELINE[scenario])], counts[(scenario, config)]
    base = bare.per_iter / per
    over = full.per_iter / per - base
    pairs = RESULTS.pairs.get(scenario)
    bases = [b for b, _ in pairs] if pairs else [RESULTS.measurement(scenario, BASELINE[scenario])]
    user_s = statistics.median(b.user_median for b in bases)
    cpu_s = statistics.median(b.median for b in bases)
    return InstrOverhead(
        over, base, user_s / per * 1e6, cpu_s / per * 1e6, layouts_note(bare, full, per)
    )


def layouts_note(bare: _harness.Instructions, full: _harness.Instructions, per: float = 1.0) -> str:
    """Each heap layout's count per item, where the jobs ran in several (else empty)."""
    if len(full.layouts) < 2:
        return ""
    return "; medians of {} heap layouts (bare {}; {} {})".format(
        len(full.layouts),
        " / ".join(f"{v / per:,.0f}" for v in bare.layouts),
        full.config,
        " / ".join(f"{v / per:,.0f}" for v in full.layouts),
    )


def cpu_overhead_us(scenario: str, config: str = "obs") -> float:
    """Table CPU medians: ``config`` minus the baseline, µs per item."""
    base = RESULTS.measurement(scenario, BASELINE[scenario]).median
    return (RESULTS.measurement(scenario, config).median - base) / items_per_iter(scenario) * 1e6
