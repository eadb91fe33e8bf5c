"""The in-process A/B: what obs-middleware costs a whole request, in CPU time, beside an A/A.

Both apps (bare and instrumented, plus a second bare app for the A/A) live in one process and are
served directly as ``await app(scope, receive, send)`` (``workloads/sides.py`` builds them).
Every round times one batch of N requests on each app, the order reversed every other round
(bare, obs, bare2 / bare2, obs, bare), so a drift of the machine's speed cancels in the pairs.
A batch is timed with ``time.process_time()`` (every thread: the export worker is charged)
after ``gc.collect()`` and ends with ``obs.flush()`` (on every app, so the A/A carries its cost
too). Per round: overhead = obs - the mean of the two bare batches around it, A/A = bare2 - bare,
per request. A run reports the median over rounds of each, against the median bare batch, and the
IQR of the paired differences.

One run still moves by about a percent from the next as the machine's speed drifts, so the
gates take the median of several runs, each in its own process (``runs()``).

    python benchmarks/_ab.py W2 --mode all --rounds 40 --batch 200         # one run, here
    python benchmarks/_ab.py W1 --mode default --runs 5                     # median of 5 processes
    python benchmarks/_ab.py W3 --mode none --json                          # one run, JSON
    python benchmarks/_ab.py W2 --mode all --profile 2000                   # cProfile of obs' path
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run as a script or imported by the suite
    sys.path.insert(0, str(HERE))

import obs_middleware as obs  # noqa: E402

# Requests per batch: a batch takes ~0.07-0.1 s of CPU on the dev machine (W3 at 2,000, ~25 ms,
# moved by 15 % between runs on a busy machine, at 6,000 by 4 %; W1 at 60 by 2 %, at 120 by 0.3 %).
BATCH = {"W1": 120, "W2": 200, "W3": 6000}
ROUNDS = 40
AA_LIMIT = 0.3  # % : the A/A median a run must stay within to resolve the gates (issue 15)


@dataclass
class Run:
    """One A/B run (one process): per-request seconds of every round's batches."""

    workload: str
    mode: str
    rounds: int
    batch: int
    bare: list[float] = field(default_factory=list)
    bare2: list[float] = field(default_factory=list)
    obs: list[float] = field(default_factory=list)
    spans_per_request: float = 0.0  # records exported per instrumented request
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def base(self) -> float:
        """Median bare CPU seconds per request (both bare apps' batches)."""
        return statistics.median(self.bare + self.bare2)

    @property
    def diffs(self) -> list[float]:
        """Per round: obs minus the mean of the two bare batches around it, s per request.

        The two bare batches bracket the obs batch in time (bare, obs, bare2 or the reverse),
        so their mean cancels a linear drift within the round; and a difference between the two
        bare apps themselves (where their objects landed in memory) does not bias the figure
        towards either.
        """
        return [o - (b + b2) / 2 for o, b, b2 in zip(self.obs, self.bare, self.bare2, strict=True)]

    @property
    def aa_diffs(self) -> list[float]:
        """Per round: bare2 - bare, seconds per request."""
        return [a - b for a, b in zip(self.bare2, self.bare, strict=True)]

    @property
    def overhead_us(self) -> float:
        """Median paired difference, µs per request."""
        return statistics.median(self.diffs) * 1e6

    @property
    def overhead_pct(self) -> float:
        """Median paired difference as % of the median bare request."""
        return statistics.median(self.diffs) / self.base * 100

    @property
    def aa_pct(self) -> float:
        """Median A/A difference as % of the median bare request."""
        return statistics.median(self.aa_diffs) / self.base * 100

    @property
    def aa_us(self) -> float:
        """Median A/A difference, µs per request."""
        return statistics.median(self.aa_diffs) * 1e6

    @property
    def iqr_pct(self) -> float:
        """Interquartile range of the paired differences, % of the median bare request."""
        q = statistics.quantiles(self.diffs, n=4)
        return (q[2] - q[0]) / self.base * 100


# -- one run, in this process ----------------------------------------------------------------------
def _timed(side: Any, n: int) -> float:
    """CPU seconds per request of one batch on ``side`` (its toggles untimed)."""
    side.before()
    gc.collect()
    t0 = time.process_time()
    side.run(n)
    if not obs.flush(10.0):
        raise RuntimeError("obs.flush() timed out: the export worker fell behind")
    spent = time.process_time() - t0
    side.after()
    return spent / n


def _validate(setup: Any) -> tuple[float, list[str]]:
    """Every side answers; the obs side exports (or not) the same before and after a toggle, and
    the bare path is the one measured before any instrumentation existed.

    Returns the records one instrumented request exports, and notes.
    """
    from workloads.sides import call_count, sdk_snapshot, snapshot_diff  # noqa: PLC0415

    notes = []
    for side in (setup.bare, setup.bare2):
        side.check()
    counts = []
    for _ in range(2):  # W1: the second one runs after a full toggle cycle
        before = setup.exported()
        setup.obs.check()
        obs.flush(10.0)
        counts.append(setup.exported() - before)
    if counts[0] != counts[1]:
        raise AssertionError(f"records per instrumented request changed: {counts}")
    if setup.export_file is not None and counts[0] == 0:
        raise AssertionError("the instrumented app exported nothing")
    if setup.toggles:
        changed = snapshot_diff(setup.bare_snapshot, sdk_snapshot())
        if changed:
            raise AssertionError(f"uninstrument_all() left patches behind: {changed[:10]}")
        notes.append("uninstrument_all() restores every SDK attribute")
    calls = min(call_count(setup.bare) for _ in range(3))
    if calls != setup.bare_calls:
        raise AssertionError(
            f"a bare request makes {calls} calls with the instrumentation "
            f"{'toggled off' if setup.toggles else 'on'}, {setup.bare_calls} before it existed"
        )
    notes.append(f"bare request: {calls:,} calls before and after instrumenting")
    return counts[0], notes


def run_here(workload: str, mode: str, rounds: int, batch: int, workdir: Path) -> Run:
    """One A/B run in this process (the caller gives a scratch directory)."""
    from _scenarios import dropped  # noqa: PLC0415
    from workloads import sides  # noqa: PLC0415

    t0 = time.monotonic()
    setup = sides.build(workload, mode, workdir)
    try:
        per_request, notes = _validate(setup)
        result = Run(workload, mode, rounds, batch, notes=setup.notes + notes)
        order = (setup.bare, setup.obs, setup.bare2)
        for side in order:  # warm-up at the measured size
            _timed(side, batch)
        exported0, obs_requests = setup.exported(), 0
        for r in range(rounds):
            for side in order if r % 2 == 0 else order[::-1]:
                getattr(result, side.name).append(_timed(side, batch))
            obs_requests += batch
        result.spans_per_request = (setup.exported() - exported0) / obs_requests
        lost = dropped()
        if mode == "all" and (result.spans_per_request != per_request or lost):
            raise AssertionError(
                f"mode 'all' exported {result.spans_per_request:g} records per request, "
                f"{per_request} at validation, {lost:g} dropped: not every span was exported "
                "(see workloads.sides.export_everything)"
            )
        result.wall_s = time.monotonic() - t0
        return result
    finally:
        sides.cleanup()


# -- several runs, one process each ----------------------------------------------------------------
def _env() -> dict[str, str]:
    """The environment of a run: no OBS_/DD_/OTEL_ settings leak in (OBS_BENCH_* do)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OBS_", "DD_", "OTEL_", "PYTEST_")) or k.startswith("OBS_BENCH_")
    }
    env["PYTHONHASHSEED"] = "0"
    return env


def run_process(workload: str, mode: str, rounds: int, batch: int) -> Run:
    """One A/B run in a fresh process (so no run inherits another's state)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), workload, "--mode", mode]
    cmd += ["--rounds", str(rounds), "--batch", str(batch), "--json"]
    proc = subprocess.run(
        cmd, env=_env(), capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"A/B run failed ({proc.returncode}): {' '.join(cmd[1:])}\n"
            f"{(proc.stdout + proc.stderr)[-3000:]}"
        )
    return Run(**json.loads(proc.stdout.strip().splitlines()[-1]))


def runs(workload: str, mode: str, count: int, rounds: int, batch: int) -> list[Run]:
    """``count`` A/B runs, one process each, one after the other."""
    return [run_process(workload, mode, rounds, batch) for _ in range(count)]


@dataclass
class Summary:
    """Several runs of one workload x mode: the medians the gates judge."""

    runs: list[Run]

    @property
    def overhead_pct(self) -> float:
        """Median over runs of each run's overhead %."""
        return statistics.median(r.overhead_pct for r in self.runs)

    @property
    def overhead_us(self) -> float:
        """Median over runs of each run's overhead, µs per request."""
        return statistics.median(r.overhead_us for r in self.runs)

    @property
    def aa_pct(self) -> float:
        """Median over runs of each run's A/A %."""
        return statistics.median(r.aa_pct for r in self.runs)

    @property
    def base_us(self) -> float:
        """Median over runs of the bare request, µs."""
        return statistics.median(r.base for r in self.runs) * 1e6

    def describe(self) -> str:
        """One line: the figures and every run's."""
        first = self.runs[0]
        each = ", ".join(f"{r.overhead_pct:+.2f} % (A/A {r.aa_pct:+.2f} %)" for r in self.runs)
        return (
            f"{first.workload} {first.mode}: bare {self.base_us:,.1f} µs/request, overhead "
            f"{self.overhead_pct:+.2f} % ({self.overhead_us:+.1f} µs), A/A {self.aa_pct:+.2f} %; "
            f"median of {len(self.runs)} runs x {first.rounds} rounds x {first.batch} requests "
            f"[{each}]"
        )


def report(run: Run) -> str:
    """A run, as the CLI prints it."""
    return "\n".join(
        [
            f"{run.workload} mode={run.mode}: {run.rounds} rounds x {run.batch} requests, "
            f"{run.wall_s:.0f} s",
            f"  bare           {run.base * 1e6:10,.1f} µs/request (CPU, median batch)",
            f"  overhead       {run.overhead_us:+10.2f} µs  {run.overhead_pct:+7.2f} %  "
            f"(IQR of the paired differences {run.iqr_pct:.2f} %)",
            f"  A/A            {run.aa_us:+10.2f} µs  {run.aa_pct:+7.2f} %"
            + ("" if abs(run.aa_pct) <= AA_LIMIT else f"  (> ±{AA_LIMIT} %: too noisy)"),
            f"  exported       {run.spans_per_request:g} records per instrumented request",
            *(f"  note: {n}" for n in run.notes),
        ]
    )


def profile_here(workload: str, mode: str, n: int, workdir: Path, top: int = 25) -> str:
    """cProfile of ``n`` instrumented requests: obs-middleware's functions by own time."""
    import cProfile  # noqa: PLC0415
    import pstats  # noqa: PLC0415

    from workloads import sides  # noqa: PLC0415

    setup = sides.build(workload, mode, workdir)
    try:
        _timed(setup.obs, max(1, n // 10))
        setup.obs.before()
        prof = cProfile.Profile(time.thread_time_ns, 1e-9)  # this thread: the request path
        prof.enable()
        setup.obs.run(n)
        prof.disable()
        setup.obs.after()
    finally:
        sides.cleanup()
    from _harness import _obs_rows  # noqa: PLC0415 - the suite's profile reduction

    rows = _obs_rows(pstats.Stats(prof), n)
    lines = [
        f"{workload} {mode}: {n} instrumented requests, request thread only, cProfile self time "
        "corrected for the profiler's per-call cost (C functions charged to their obs caller)",
        f"{'share':>6} {'µs/req':>7} {'calls/req':>9}  function",
    ]
    for r in rows[:top]:
        lines.append(
            f"{r['share'] * 100:5.1f}% {r['us_per_iter']:7.2f} {r['calls']:9.2f}  {r['function']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """The CLI (see the module docstring)."""
    from workloads.sides import MODES, WORKLOADS  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--mode", choices=MODES, default="default")
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--batch", type=int, default=0, help=f"default: {BATCH}")
    parser.add_argument("--runs", type=int, default=0, help="median of this many processes")
    parser.add_argument("--json", action="store_true", help="print one run as JSON")
    parser.add_argument("--profile", type=int, default=0, help="profile this many requests")
    args = parser.parse_args(argv)
    batch = args.batch or BATCH[args.workload]
    if args.runs:
        done = []
        for i in range(args.runs):
            done.append(run_process(args.workload, args.mode, args.rounds, batch))
            print(f"run {i + 1}: " + report(done[-1]).replace("\n", "\n  "), flush=True)
        print(Summary(done).describe())
        return
    workdir = Path(tempfile.mkdtemp(prefix="obs-ab-"))
    try:
        if args.profile:
            print(profile_here(args.workload, args.mode, args.profile, workdir))
            return
        result = run_here(args.workload, args.mode, args.rounds, batch, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(asdict(result)) if args.json else report(result), flush=True)


if __name__ == "__main__":
    main()
