"""Load test: W2 and W1 behind uvicorn on loopback, driven at saturation by ``wrk``.

Each mode runs in a uvicorn server process of its own (patches never leak), one after another:
every round starts each mode's server in turn (the order rotated by one every round), checks one
request, warms it up, then drives it with ``wrk -t1 -cC --latency`` for a fixed time, and stops it.
Per mode: requests/s and p99 latency per round, the loss against bare (the median over rounds of
the paired loss ``1 - mode/bare`` of the same round), and the server's CPU per request. ``bare2``
is a second bare server: the A/A of the losses.

Modes: ``bare``, ``bare2``, ``obs-default`` (``instrument_all()`` + ``ObsMiddleware``, the
library's default sampling, jsonl to a file), ``obs-all`` (every span exported), ``otel``
(``OpenTelemetryMiddleware`` as it comes, ``SQLAlchemyInstrumentor(skip_dep_check=True)`` and
``HTTPXClientInstrumentor``; BatchSpanProcessor to a counting exporter), ``ddtrace``
(``TraceMiddleware`` + ``patch(sqlalchemy=True[, openai=True])``, agent absent).

    python benchmarks/_load.py W2 --rounds 3 --duration 6 --warmup 2
    python benchmarks/_load.py W1 --modes bare,bare2,obs-default --json
    python benchmarks/_load.py serve W2 obs-all --port 8001              # one server, by hand

The server uses ``--loop uvloop --http httptools`` when both are installed (else asyncio and h11,
said in the output). Server, wrk and (W1) the emulator share this machine's cores: the figures
are what this machine serves, not what the app alone could.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

MODES = ("bare", "bare2", "obs-default", "obs-all", "otel", "ddtrace")
WORKLOADS = ("W1", "W2")
FAST = importlib.util.find_spec("uvloop") is not None and (
    importlib.util.find_spec("httptools") is not None
)
SERVER = "uvicorn --loop uvloop --http httptools" if FAST else "uvicorn --loop asyncio --http h11"


# -- the server (its own process) ------------------------------------------------------------------
def _app(workload: str, mode: str, emulator_url: str, workdir: Path) -> tuple[Any, list[str]]:
    """Instrumentation first (it hooks engine creation), then the app; returns (app, notes)."""
    notes: list[str] = []
    handle: Any = None
    if mode.startswith("obs"):
        from workloads.sides import export_everything  # noqa: PLC0415

        import obs_middleware as obs  # noqa: PLC0415

        sampling = export_everything() if mode == "obs-all" else None
        obs.configure(
            service="bench", exporters=[f"jsonl:{workdir / 'obs.jsonl'}"], sampling=sampling
        )
        obs.instrument_all()
    elif mode == "ddtrace":
        from _peers import DdtraceHandle  # noqa: PLC0415

        handle = DdtraceHandle()
        import ddtrace  # noqa: PLC0415

        ddtrace.patch(sqlalchemy=True, **({"openai": True} if workload == "W1" else {}))
    elif mode == "otel":
        from _peers import OtelHandle  # noqa: PLC0415

        handle = OtelHandle()
    module = importlib.import_module(f"workloads.{'w1_ai' if workload == 'W1' else 'w2_crud'}")
    app, engine = module.new_app(emulator_url)
    if mode.startswith("obs"):
        import obs_middleware as obs  # noqa: PLC0415

        app.add_middleware(obs.ObsMiddleware)
    elif mode == "ddtrace":
        from ddtrace.contrib.asgi import TraceMiddleware  # noqa: PLC0415

        app.add_middleware(TraceMiddleware)
    elif mode == "otel":
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware  # noqa: PLC0415
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor  # noqa: PLC0415
        from opentelemetry.instrumentation.sqlalchemy import (  # noqa: PLC0415
            SQLAlchemyInstrumentor,
        )

        app.add_middleware(OpenTelemetryMiddleware, tracer_provider=handle.provider)
        # It declares sqlalchemy<2.1 and would instrument nothing here without the override.
        SQLAlchemyInstrumentor().instrument(
            engine=engine, tracer_provider=handle.provider, skip_dep_check=True
        )
        if workload == "W1":
            HTTPXClientInstrumentor().instrument(tracer_provider=handle.provider)
    return app, notes


def serve(workload: str, mode: str, port: int, emulator_url: str) -> None:
    """Run one mode's server until SIGTERM."""
    import uvicorn  # noqa: PLC0415

    workdir = Path(tempfile.mkdtemp(prefix="obs-load-"))
    try:
        app, _ = _app(workload, mode, emulator_url, workdir)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            loop="uvloop" if FAST else "asyncio",
            http="httptools" if FAST else "h11",
            log_level="warning",
            access_log=False,
            lifespan="off",
        )
        uvicorn.Server(config).run()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# -- the driver ------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One wrk run against one mode."""

    rps: float
    p99_ms: float
    cpu_us: float  # server process CPU per request (user + system, /proc, 10 ms ticks)
    requests: int


@dataclass
class Load:
    """Every round of every mode of one workload."""

    workload: str
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    server: str = SERVER
    connections: int = 8
    duration_s: float = 6.0
    notes: list[str] = field(default_factory=list)

    def loss(self, mode: str) -> float:
        """Median over rounds of the throughput lost against bare in the same round, %."""
        return statistics.median(
            (1 - m.rps / b.rps) * 100
            for m, b in zip(self.samples[mode], self.samples["bare"], strict=True)
        )

    def median(self, mode: str, what: str) -> float:
        """Median over rounds of one ``Sample`` field."""
        return float(statistics.median(getattr(s, what) for s in self.samples[mode]))


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of the line)


def _wait_ready(port: int, workload: str, proc: subprocess.Popen[bytes]) -> None:
    module = importlib.import_module(f"workloads.{'w1_ai' if workload == 'W1' else 'w2_crud'}")
    request = module.REQUEST
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request(
                request.get("method", "GET"),
                request["path"],
                body=request.get("body"),
                headers={k.decode(): v.decode() for k, v in request.get("headers", [])},
            )
            response = conn.getresponse()
            body = response.read()
            conn.close()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
            continue
        if response.status != 200:
            raise AssertionError(f"status {response.status}: {body[:200]!r}")
        module.check(body)
        return


def _lua(workload: str, workdir: Path) -> list[str]:
    """wrk's ``-s`` script for a POST (W1); nothing for a GET."""
    if workload != "W1":
        return []
    from workloads import w1_ai  # noqa: PLC0415

    headers = "".join(f'wrk.headers["{k.decode()}"] = "{v.decode()}"\n' for k, v in w1_ai.HEADERS)
    script = workdir / "w1.lua"
    script.write_text(f"wrk.method = \"POST\"\nwrk.body = '{w1_ai.BODY.decode()}'\n{headers}")
    return ["-s", str(script)]


def _wrk(url: str, seconds: float, connections: int, extra: list[str]) -> tuple[float, float, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", *extra]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    if "Non-2xx" in out or re.search(r"Socket errors: .*[1-9]", out):
        raise AssertionError(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m is not None, out
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, p99, requests


def _one(
    workload: str, mode: str, emulator_url: str, args: argparse.Namespace, workdir: Path
) -> Sample:
    from _peers import free_port  # noqa: PLC0415

    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "serve", workload, mode]
    cmd += ["--port", str(port), "--emulator", emulator_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "DD_", "OTEL_"))}
    log = workdir / f"server-{mode}.log"
    with log.open("wb") as err:  # peers complain about their absent agent on every flush
        proc = subprocess.Popen(cmd, env=env, stdout=err, stderr=subprocess.STDOUT)
    try:
        try:
            _wait_ready(port, workload, proc)
        except Exception as exc:
            raise RuntimeError(f"{mode} server not ready:\n{log.read_text()[-3000:]}") from exc
        module = "w1_ai" if workload == "W1" else "w2_crud"
        url = f"http://127.0.0.1:{port}{importlib.import_module(f'workloads.{module}').PATH}"
        extra = _lua(workload, workdir)
        _wrk(url, args.warmup, args.connections, extra)
        t0 = _cpu_ticks(proc.pid)
        rps, p99, requests = _wrk(url, args.duration, args.connections, extra)
        cpu_s = (_cpu_ticks(proc.pid) - t0) / os.sysconf("SC_CLK_TCK")
        return Sample(rps, p99, cpu_s / requests * 1e6, requests)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # a peer stuck on its absent agent
            proc.kill()
            proc.wait(5)


def run(workload: str, args: argparse.Namespace) -> Load:
    """Every round of every mode (``args``: modes, rounds, duration, warmup, connections)."""
    from workloads import _emulator  # noqa: PLC0415

    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    modes = list(args.modes)
    load = Load(workload, {m: [] for m in modes}, connections=args.connections)
    load.duration_s = args.duration
    if workload == "W1" and "otel" in modes:
        load.notes.append(
            "otel: the openai SDK sends through httpx2; the httpx instrumentor sees none"
        )
    workdir = Path(tempfile.mkdtemp(prefix="obs-load-"))
    try:
        url = _emulator.emulator_url() if workload == "W1" else ""
        for r in range(args.rounds):
            for mode in modes[r % len(modes) :] + modes[: r % len(modes)]:
                load.samples[mode].append(_one(workload, mode, url, args, workdir))
    finally:
        _emulator.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return load


def report(load: Load) -> str:
    """A table of every mode."""
    lines = [
        f"{load.workload} behind {load.server}, wrk -t1 -c{load.connections}, "
        f"{load.duration_s:g} s per run, {len(load.samples['bare'])} rounds (modes interleaved)",
        "",
        "| mode | requests/s per round | loss vs bare (paired median) | p99 ms (median) "
        "| server CPU µs/request |",
        "|---|---|---|---|---|",
    ]
    for mode, samples in load.samples.items():
        loss = "-" if mode == "bare" else f"{-load.loss(mode):+.1f} %"
        lines.append(
            f"| {mode} | {' · '.join(f'{s.rps:,.0f}' for s in samples)} | {loss} | "
            f"{load.median(mode, 'p99_ms'):.2f} | {load.median(mode, 'cpu_us'):,.0f} |"
        )
    return "\n".join([*lines, *(f"note: {n}" for n in load.notes)])


def run_process(
    workload: str,
    modes: list[str],
    rounds: int,
    duration: float,
    warmup: float,
    connections: int = 8,
) -> Load:
    """``run`` in a fresh process (the suite's entry point); returns its ``Load``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), workload, "--json"]
    cmd += ["--modes", ",".join(modes), "--rounds", str(rounds), "--duration", str(duration)]
    cmd += ["--warmup", str(warmup), "--connections", str(connections)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"load run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    data["samples"] = {m: [Sample(**s) for s in v] for m, v in data["samples"].items()}
    return Load(**data)


def main(argv: list[str] | None = None) -> None:
    """The CLI (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        p = argparse.ArgumentParser()
        p.add_argument("workload", choices=WORKLOADS)
        p.add_argument("mode", choices=MODES)
        p.add_argument("--port", type=int, required=True)
        p.add_argument("--emulator", default="")
        a = p.parse_args(argv[1:])
        serve(a.workload, a.mode, a.port, a.emulator)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workload", choices=WORKLOADS)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if "bare" not in args.modes:
        parser.error("--modes must include bare")
    load = run(args.workload, args)
    print(json.dumps(asdict(load)) if args.json else report(load), flush=True)


if __name__ == "__main__":
    main()
