"""Issue 15's overhead gates: whole requests in CPU time (``_ab``) and under load (``_load``).

Budgets (never loosened to make a run pass):

- W1 AI request: <= +1.0 % at default settings, <= +3 % with every span exported;
- W2 CRUD request: <= +3 % at default settings, <= +8 % with every span exported;
- W3 hello request: <= +4 µs per request at default settings;
- under load (uvicorn, wrk at saturation): W2 loses <= 3 % of its throughput at default settings,
  <= 10 % with every span exported; W1 <= 1 % at default settings.

An A/B gate takes the median of several runs (one process each: one run moves by about a
percent from the next) and fails too if the median A/A of those runs is beyond ±0.3 %: a method
that cannot resolve the budget cannot pass it. Every gate prints its A/A.

Plans (``OBS_BENCH_PLAN``): ``full`` (``make bench``), ``ci`` (``make bench-ci``: the same method,
fewer runs and rounds, shorter load runs), ``quick`` (``OBS_BENCH_QUICK=1``: for iterating only).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import _ab
import _load

PCT_BUDGETS = {  # (workload, mode) -> overhead budget, % of the bare request
    ("W1", "default"): 1.0,
    ("W1", "all"): 3.0,
    ("W2", "default"): 3.0,
    ("W2", "all"): 8.0,
}
US_BUDGETS = {("W3", "default"): 4.0}  # µs per request
LOSS_BUDGETS = {  # (workload, mode) -> throughput loss under load, %
    ("W2", "obs-default"): 3.0,
    ("W2", "obs-all"): 10.0,
    ("W1", "obs-default"): 1.0,
}
AA_LIMIT = _ab.AA_LIMIT
# Diagnostics (full plan only, one run each): where the overhead goes.
DIAGNOSTICS = (
    ("W3", "all"),
    ("W3", "none"),
    ("W2", "none"),
    ("W2", "middleware-only"),
    ("W1", "none"),
    ("W1", "middleware-only"),
)


@dataclass(frozen=True)
class Plan:
    """How much the overhead gates measure."""

    name: str
    ab_runs: int  # A/B runs (processes) per gate
    ab_rounds: int  # rounds per run
    load_rounds: int
    load_duration: float  # seconds of wrk per mode and round
    load_warmup: float
    diagnostics: bool  # run DIAGNOSTICS too


PLANS = {
    "full": Plan(
        "full",
        ab_runs=5,
        ab_rounds=40,
        load_rounds=3,
        load_duration=6.0,
        load_warmup=2.0,
        diagnostics=True,
    ),
    "ci": Plan(
        "ci",
        ab_runs=3,
        ab_rounds=30,
        load_rounds=3,  # a median of two rounds is their mean: one bad round moved W1 by 10 %
        load_duration=4.0,
        load_warmup=1.0,
        diagnostics=False,
    ),
    "quick": Plan(
        "quick",
        ab_runs=1,
        ab_rounds=8,
        load_rounds=1,
        load_duration=2.0,
        load_warmup=1.0,
        diagnostics=False,
    ),
}
PLAN = PLANS[
    os.environ.get("OBS_BENCH_PLAN")
    or ("quick" if os.environ.get("OBS_BENCH_QUICK", "") not in ("", "0") else "full")
]


@dataclass
class Overhead:
    """What this session measured for the overhead gates (memoized: nothing runs twice)."""

    ab: dict[tuple[str, str], _ab.Summary] = field(default_factory=dict)
    load: dict[str, _load.Load] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self, workload: str, mode: str, runs: int | None = None) -> _ab.Summary:
        """The A/B runs of ``workload`` x ``mode`` (``PLAN.ab_runs`` of them unless said)."""
        key = (workload, mode)
        if key not in self.ab:
            t0 = time.monotonic()
            done = _ab.runs(
                workload, mode, runs or PLAN.ab_runs, PLAN.ab_rounds, _ab.BATCH[workload]
            )
            self.ab[key] = _ab.Summary(done)
            self.seconds += time.monotonic() - t0
        return self.ab[key]

    def load_test(self, workload: str) -> _load.Load:
        """Every mode of ``workload`` under load, interleaved round by round."""
        if workload not in self.load:
            t0 = time.monotonic()
            self.load[workload] = _load.run_process(
                workload,
                list(_load.MODES),
                PLAN.load_rounds,
                PLAN.load_duration,
                PLAN.load_warmup,
            )
            self.seconds += time.monotonic() - t0
        return self.load[workload]


OVERHEAD = Overhead()


def report() -> str:
    """The overhead section of the report (empty when nothing of it ran)."""
    if not (OVERHEAD.ab or OVERHEAD.load):
        return ""
    out = [
        f"### Overhead of whole requests ({PLAN.name} plan, {OVERHEAD.seconds:.0f} s)",
        "",
        "In-process A/B (`benchmarks/_ab.py`): CPU time (process, export thread included) per "
        "request, median over rounds of the paired differences, median over runs; the A/A is two "
        "bare apps measured the same way.",
        "",
        "| workload | mode | bare µs/request | overhead | µs | A/A | runs x rounds x batch "
        "| each run (A/A) | records/request |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (workload, mode), s in sorted(OVERHEAD.ab.items()):
        first = s.runs[0]
        each = ", ".join(f"{r.overhead_pct:+.1f} ({r.aa_pct:+.1f})" for r in s.runs)
        out.append(
            f"| {workload} | {mode} | {s.base_us:,.1f} | **{s.overhead_pct:+.2f} %** | "
            f"{s.overhead_us:+.1f} | {s.aa_pct:+.2f} % | {len(s.runs)} x {first.rounds} x "
            f"{first.batch} | {each} | {first.spans_per_request:g} |"
        )
    out.append("")
    notes = {n for s in OVERHEAD.ab.values() for r in s.runs for n in r.notes}
    out += [f"- {n}" for n in sorted(notes)] + [""]
    for load in OVERHEAD.load.values():
        out += [_load.report(load), ""]
    return "\n".join(out)


def save(folder: Path) -> None:
    """The raw runs, beside the suite's report."""
    raw = {
        "plan": asdict(PLAN),
        "ab": {f"{w}/{m}": [asdict(r) for r in s.runs] for (w, m), s in OVERHEAD.ab.items()},
        "load": {w: asdict(load) for w, load in OVERHEAD.load.items()},
    }
    (folder / "obs-overhead-last.json").write_text(json.dumps(raw, indent=1))


def aa_loss(load: _load.Load) -> float:
    """The A/A of the load test: the second bare server's paired loss, %."""
    return load.loss("bare2")
