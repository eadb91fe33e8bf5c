"""Spans through the OTLP exporter to rotel, forwarded to Arize Phoenix; metrics received by
rotel, over OTLP/HTTP and OTLP/gRPC.

Verified with opentelemetry-sdk / exporter-otlp-proto-http 1.45, rotel 0.0.1a15 (alpha10 binary),
arize-phoenix 20.26.
"""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

import obs_middleware as obs
from obs_middleware._core.metrics import http_duration
from obs_middleware.exporters.otlp import OTLPExporter

from .conftest import exporting_to


def phoenix_spans(base: str, trace_id: str) -> list[dict]:
    url = f"{base}/v1/projects/default/spans?limit=1000"
    with urllib.request.urlopen(url, timeout=10) as resp:
        data = json.load(resp)["data"]
    return [s for s in data if s["context"]["trace_id"] == trace_id]


def test_a_trace_arrives_whole_in_phoenix_with_parent_links(otlp_peers):
    exporter = OTLPExporter(otlp_peers["OBS_OTLP_URL"], metrics=False)
    with exporting_to(exporter, service="otlp-suite", version="9.9.9", environment="ci"):
        with obs.span("POST /generate", _kind="server", **{"http.route": "/generate"}) as root:
            obs.set_user("u-42")
            with obs.span("ai.request", _kind="client", **{"ai.model": "sdxl"}) as ai:
                ai.event("queued", position=2)
                with obs.span("download"):
                    pass
            try:
                with obs.span("moderation"):
                    raise ValueError("flagged")
            except ValueError:
                pass
        assert obs.flush(10)
    trace_id = f"{root.trace_id:032x}"
    deadline = time.monotonic() + 30
    spans: list[dict] = []
    while time.monotonic() < deadline and len(spans) < 4:
        time.sleep(0.5)
        spans = phoenix_spans(otlp_peers["OBS_PHOENIX_URL"], trace_id)
    by_name = {s["name"]: s for s in spans}
    assert sorted(by_name) == ["POST /generate", "ai.request", "download", "moderation"]
    root_id = by_name["POST /generate"]["context"]["span_id"]
    assert by_name["POST /generate"]["parent_id"] is None
    assert by_name["ai.request"]["parent_id"] == root_id
    assert by_name["moderation"]["parent_id"] == root_id
    assert by_name["download"]["parent_id"] == by_name["ai.request"]["context"]["span_id"]
    assert by_name["ai.request"]["attributes"]["ai.model"] == "sdxl"
    assert by_name["POST /generate"]["attributes"]["enduser.id"] == "u-42"
    assert [e["name"] for e in by_name["ai.request"]["events"]] == ["queued"]
    assert by_name["moderation"]["status_code"] == "ERROR"
    assert by_name["POST /generate"]["status_code"] == "OK"


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_metrics_and_resource_reach_the_collector(otlp_peers, protocol):
    url = otlp_peers["OBS_OTLP_GRPC_URL" if protocol == "grpc" else "OBS_OTLP_URL"]
    exporter = OTLPExporter(url, protocol=protocol, resource_attributes={"worker.id": "w-7"})
    service = f"otlp-metrics-{protocol.replace('/', '-')}"
    route = f"/otlp-suite-{protocol.replace('/', '-')}"
    with exporting_to(exporter, service=service, version="1.0.0", environment="ci"):
        http_duration.record(("GET", route, "2xx"), 12.0)
        with obs.span("tick"):
            pass
        assert obs.flush(10)  # flush sends the metrics too
    deadline = time.monotonic() + 20
    log = ""
    while time.monotonic() < deadline:
        with open(otlp_peers["OBS_ROTEL_LOG"], errors="replace") as f:
            log = f.read()
        if route in log:
            break
        time.sleep(0.5)
    else:
        pytest.fail("rotel never logged our metrics")
    section = log[log.rindex(f"service.name: Str({service})") - 2000 :]
    assert "service.version: Str(1.0.0)" in section
    assert "deployment.environment.name: Str(ci)" in section
    assert "worker.id: Str(w-7)" in section
    assert "Name: http.server.duration" in section
    assert "DataType: Histogram" in section
