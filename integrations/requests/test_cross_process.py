"""requests against a real server: code in a span calls a Starlette service (its own process,
under uvicorn, on loopback); the service continues the trace. Verified with requests 2.34.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

import obs_middleware as obs
from obs_middleware.integrations import requests as obs_requests

from .conftest import Downstream, free_port

Records = Callable[[], list[dict[str, Any]]]


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_requests.patch()
    yield
    obs_requests.unpatch()


def test_one_trace_across_two_processes(downstream: Downstream, upstream_jsonl: Records) -> None:
    with obs.span("nightly.batch"):
        answer = requests.get(f"{downstream.url}/images/7", params={"token": "t0p"}, timeout=10)
    assert answer.json() == {"id": "7"}
    up = {r["name"]: r for r in upstream_jsonl()}
    down = {r["name"]: r for r in downstream.records()}
    job, client = up["nightly.batch"], up["GET 127.0.0.1"]
    remote = down["GET /images/{image_id}"]
    assert job["trace_id"] == client["trace_id"] == remote["trace_id"]
    assert (client["parent_id"], remote["parent_id"]) == (job["span_id"], client["span_id"])
    assert client["url.full"] == f"{downstream.url}/images/7?token="
    assert "t0p" not in str(up)


def test_redirect_hops_share_one_client_span(
    downstream: Downstream, upstream_jsonl: Records
) -> None:
    with requests.Session() as session:
        assert session.get(f"{downstream.url}/old/3", timeout=10).status_code == 200
    (client,) = upstream_jsonl()
    hops = [r for r in downstream.records() if r.get("span.kind") == "server"]
    assert [r["name"] for r in hops] == ["GET /old/{image_id}", "GET /images/{image_id}"]
    assert {(r["trace_id"], r["parent_id"]) for r in hops} == {
        (client["trace_id"], client["span_id"])
    }
    assert (client["http.status_code"], client["parent_id"]) == (200, None)


def test_connection_refused_is_an_error_span(upstream_jsonl: Records) -> None:
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{free_port()}/nothing", timeout=5)
    (client,) = upstream_jsonl()
    assert (client["status"], client["error_type"]) == ("error", "ConnectionError")
