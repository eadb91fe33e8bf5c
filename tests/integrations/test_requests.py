"""requests client spans through an in-process transport adapter: the record, traceparent
injection, one span across redirects, streaming, errors, and suppression of exporter traffic."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

import obs_middleware as obs
from obs_middleware._core.context import EXPORTING, parse_traceparent
from obs_middleware.integrations import requests as obs_requests
from obs_middleware.testing import Capture


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_requests.patch()
    yield
    obs_requests.unpatch()


class Adapter(BaseAdapter):
    """Answers in-process, remembering every prepared request it was handed."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        response = requests.Response()
        response.request = request
        response.url = request.url or ""
        if request.path_url.startswith("/old"):
            response.status_code = 302
            response.headers = CaseInsensitiveDict({"Location": "/new"})
            response.raw = io.BytesIO(b"")
        elif request.path_url.startswith("/down"):
            raise requests.ConnectionError("refused")
        else:
            response.status_code = 200
            response.headers = CaseInsensitiveDict({"Content-Length": "7"})
            response.raw = io.BytesIO(b"answer!")
        return response

    def close(self) -> None:
        pass


@pytest.fixture
def session() -> Iterator[tuple[requests.Session, Adapter]]:
    adapter = Adapter()
    with requests.Session() as s:
        s.mount("https://", adapter)
        yield s, adapter


def test_request_inside_a_span_is_a_client_child_with_traceparent(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, adapter = session
    with obs.span("job"):
        s.put("https://u:p@api.example.com/v1/items/9?q=secret", data=b"abc")
    record = obs_capture.span("PUT api.example.com")
    assert {k: v for k, v in record.items() if k.startswith(("http.", "url.", "server."))} == {
        "http.method": "PUT",
        "server.address": "api.example.com",
        "url.full": "https://api.example.com/v1/items/9?q=",
        "http.status_code": 200,
        "http.request_size": 3,
        "http.response_size": 7,
    }
    assert (record["span.kind"], record["parent_id"]) == ("client", "0000000000000001")
    parent = parse_traceparent(adapter.seen[0].headers["traceparent"].encode())
    assert parent is not None
    assert f"{parent.span_id:016x}" == record["span_id"]


def test_redirects_stay_in_one_span_and_carry_its_traceparent(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, adapter = session
    assert s.get("https://api.example.com/old").status_code == 200
    assert obs_capture.names == ["GET api.example.com"]
    first, second = (r.headers["traceparent"] for r in adapter.seen)
    assert first == second


def test_streamed_response_is_sized_by_its_header(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, _ = session
    response = s.get("https://api.example.com/big", stream=True)
    assert obs_capture.spans[0]["http.response_size"] == 7
    assert response.raw.read() == b"answer!"  # the body is still the caller's to read


def test_connection_error_is_recorded_and_re_raised(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, _ = session
    with pytest.raises(requests.ConnectionError):
        s.get("https://api.example.com/down")
    (record,) = obs_capture.spans
    assert (record["status"], record["error_type"]) == ("error", "ConnectionError")


def test_exporter_traffic_is_never_traced(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, adapter = session
    token = EXPORTING.set(True)
    try:
        s.get("https://collector.example.com/v1/logs")
    finally:
        EXPORTING.reset(token)
    assert obs_capture.spans == []
    assert "traceparent" not in adapter.seen[0].headers


def test_unpatch_stops_tracing(
    obs_capture: Capture, session: tuple[requests.Session, Adapter]
) -> None:
    s, _ = session
    obs_requests.patch()  # idempotent
    s.get("https://api.example.com/a")
    obs_requests.unpatch()
    s.get("https://api.example.com/b")
    assert obs_capture.names == ["GET api.example.com"]


def test_no_span_exports_query_values_of_a_failed_request(
    obs_capture: Capture, closed_port: int, failing_server: str
) -> None:
    query = {"email": "bob@example.com"}
    with pytest.raises(requests.ConnectionError), obs.span("refused"):
        requests.get(f"http://127.0.0.1:{closed_port}/x", params=query, timeout=5)
    with pytest.raises(requests.HTTPError), obs.span("failed"):
        requests.get(f"{failing_server}/x", params=query, timeout=5).raise_for_status()
    assert "bob" not in repr(obs_capture.records)
    messages = {r["name"]: r["error_message"] for r in obs_capture.spans if r["error_message"]}
    assert set(messages) == {"GET 127.0.0.1", "refused", "failed"}
    assert "url: /x?email= " in messages["refused"]
    assert messages["failed"].endswith(f"for url: {failing_server}/x?email=")
