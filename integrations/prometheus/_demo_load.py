"""The demo service under load, its metrics served for a real Prometheus: run by test_grafana.py.

``python _demo_load.py PORT DOWN_PORT SPOOL_DIR ROUNDS PER_ROUND``: the demo's apps, database,
emulated providers and job workers (``obs_middleware.cli``'s own), driven with the demo's
request mix in ``ROUNDS`` rounds of ``PER_ROUND`` requests a second apart, so that the
1-second scrapes see the counters move. Metrics are served on 127.0.0.1:PORT. Two more exporters
post to a backend that is down (DOWN_PORT, nothing listens): one without a spool (its batches
are dropped and counted in ``obs_dropped_total``), one spooling to SPOOL_DIR
(``obs_exporter_spool_bytes``); both open their circuit breaker. Prints ``sent N`` when done and
keeps serving until stdin closes. In a process of its own: the demo patches the AI SDKs and the
pipeline is process-wide.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import tempfile

import obs_middleware as obs
from obs_middleware._delivery_options import DeliveryOptions
from obs_middleware.cli import demo
from obs_middleware.cli._demo_ai import Providers
from obs_middleware.cli._demo_app import DemoService
from obs_middleware.exporters.http import HttpExporter
from obs_middleware.exporters.prometheus import PrometheusExporter

# Failures of 1 provider call in 10 (the demo's own is 1 in 25): some of the few upscale jobs of
# a short load fail too, so the job failure panels have their series.
FAILURE_RATE = 0.1


async def drive(service: DemoService, rounds: int, per_round: int, rng: random.Random) -> int:
    service.start_worker()
    sent = 0
    for call in demo._WARMUP:
        await demo._send(service, call)
        sent += 1
    for _ in range(rounds):
        calls = [demo._call(rng) for _ in range(per_round)]
        await asyncio.gather(*(demo._send(service, call) for call in calls))
        sent += len(calls)
        await asyncio.sleep(1.0)
    await service.stop_worker()
    return sent


def main() -> None:
    port, down_port, spool = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rounds, per_round = int(sys.argv[4]), int(sys.argv[5])
    down = f"http://127.0.0.1:{down_port}"
    fail_fast = {"timeout_s": 0.5, "max_attempts": 1, "breaker_failures": 1}
    obs.configure(
        service=demo.SERVICE,
        exporters=[
            PrometheusExporter(port),
            HttpExporter(down, name="http-dropping",
                         delivery=DeliveryOptions(**fail_fast, spool_dir=None)),
            HttpExporter(down, name="http-spooling",
                         delivery=DeliveryOptions(**fail_fast, spool_dir=spool)),
        ],
        **demo._pricing(),
    )  # fmt: skip
    logging.getLogger("obs_middleware").setLevel(logging.ERROR)  # the down backend, slow queries
    litestar_plugin = "litestar" in obs.instrument_all().patched
    providers = Providers(random.Random(7), failure_rate=FAILURE_RATE)
    providers.start()
    with tempfile.TemporaryDirectory(prefix="obs-grafana-") as directory:
        service = DemoService(directory, providers, litestar_plugin=litestar_plugin)
        obs.instrument_all()
        try:
            sent = asyncio.run(drive(service, rounds, per_round, random.Random(7)))
            obs.flush(5.0)
            print(f"sent {sent}", flush=True)
            sys.stdin.read()  # serve /metrics until the test is done
        finally:
            service.db.close()
            providers.close()
    obs.shutdown(5.0)


if __name__ == "__main__":
    main()
