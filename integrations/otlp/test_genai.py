"""An OpenAI call made through the real ``openai`` SDK (against our emulator), exported over OTLP to
rotel and forwarded to Arize Phoenix: Phoenix lists it as an LLM span with its model and token
counts, read from the ``gen_ai.*`` attributes (Phoenix 20.x maps them to OpenInference itself; we
emit no ``llm.*`` / ``openinference.*`` attribute).

Verified with openai 3.63, rotel 0.0.1a15, arize-phoenix 20.26.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import openai
import pytest

import obs_middleware as obs
from obs_middleware.exporters.otlp import OTLPExporter
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.testing.emulators.openai import OpenAIEmulator

from .conftest import exporting_to
from .test_otlp import phoenix_spans


@pytest.fixture
def openai_client() -> Iterator[openai.OpenAI]:
    obs_openai.patch()
    try:
        with (
            OpenAIEmulator() as emu,
            openai.OpenAI(api_key="sk-test", base_url=emu.url + "/v1", max_retries=0) as client,
        ):
            yield client
    finally:
        obs_openai.unpatch()


def phoenix_graphql(base: str, query: str) -> dict:
    body = json.dumps({"query": query}).encode()
    request = urllib.request.Request(
        f"{base}/graphql", body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)["data"]


def wait_for_spans(base: str, trace_id: str, count: int) -> dict[str, dict]:
    deadline = time.monotonic() + 30
    spans: list[dict] = []
    while time.monotonic() < deadline and len(spans) < count:
        time.sleep(0.5)
        spans = phoenix_spans(base, trace_id)
    return {s["name"]: s for s in spans}


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_an_openai_call_is_an_llm_span_with_model_and_tokens_in_phoenix(
    otlp_peers, openai_client, protocol
):
    url = (
        otlp_peers["OBS_OTLP_URL"]
        if protocol == "http/protobuf"
        else otlp_peers["OBS_OTLP_GRPC_URL"]
    )
    exporter = OTLPExporter(url, protocol=protocol, metrics=False)
    with exporting_to(exporter, service=f"genai-{protocol}", environment="ci"):
        with obs.span("POST /chat", _kind="server") as root:
            openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
        assert obs.flush(10)
    trace_id = f"{root.trace_id:032x}"
    by_name = wait_for_spans(otlp_peers["OBS_PHOENIX_URL"], trace_id, 2)
    assert sorted(by_name) == ["POST /chat", "ai.request"]
    llm = by_name["ai.request"]
    assert llm["span_kind"] == "LLM"
    assert llm["parent_id"] == by_name["POST /chat"]["context"]["span_id"]
    attributes = llm["attributes"]
    assert attributes["llm.model_name"] == "gpt-4o-mini"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["ai.model"] == "gpt-4o-mini"  # ours stay
    # Phoenix's own token columns (GraphQL), filled from gen_ai.usage.*
    node = phoenix_graphql(
        otlp_peers["OBS_PHOENIX_URL"],
        "{ projects(first: 50) { edges { node { name spans(first: 100) { edges { node {"
        " name spanKind context { traceId } tokenCountPrompt tokenCountCompletion"
        " tokenCountTotal } } } } } } }",
    )
    found = [
        span["node"]
        for project in node["projects"]["edges"]
        for span in project["node"]["spans"]["edges"]
        if span["node"]["context"]["traceId"] == trace_id and span["node"]["name"] == "ai.request"
    ]
    assert len(found) == 1
    (span,) = found
    assert span["spanKind"] == "llm"
    # the emulator's usage: 20 prompt and 10 completion tokens
    assert (span["tokenCountPrompt"], span["tokenCountCompletion"], span["tokenCountTotal"]) == (
        20,
        10,
        30,
    )
    assert attributes["llm.token_count.prompt"] == 20
    assert attributes["gen_ai.operation.name"] == "chat"
