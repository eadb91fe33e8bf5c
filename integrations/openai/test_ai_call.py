"""A custom call made only with ``obs.ai_call`` is a built-in call: the same record fields,
metrics, cost roll-up per user/tier/model and ``obs report`` rows as the OpenAI SDK's own call
(the issue's acceptance test). The custom side talks to the same emulator over raw HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai

import obs_middleware as obs
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store
from obs_middleware.testing import capture
from obs_middleware.testing.emulators.openai import OpenAIEmulator

HI = [{"role": "user", "content": "Say hi"}]
# Differ between any two calls: ids the provider gives, our ids and the clock.
PER_CALL = {"trace_id", "span_id", "parent_id", "start", "duration_ms"}
PROVIDER_IDS = {"ai.request_id", "ai.response_id"}
LATENCY = {"p50", "p95", "p99", "max", "mean", "min"}


def builtin(client: openai.OpenAI, emu: OpenAIEmulator) -> None:
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)


def custom(client: openai.OpenAI, emu: OpenAIEmulator) -> None:
    with obs.ai_call("openai", "gpt-4o-mini", operation="chat", modality="text") as call:
        call.set_inputs("Say hi")
        reply = httpx.post(
            emu.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": HI},
            headers={"Authorization": "Bearer sk-test"},
        )
        body = reply.json()
        usage = body["usage"]
        call.set_response_model(body["model"])
        call.set_response_id(body["id"])
        call.set_request_id(reply.headers["x-request-id"])
        call.set_tokens(
            input=usage["prompt_tokens"],
            cached=usage["prompt_tokens_details"]["cached_tokens"],
            output=usage["completion_tokens"],
            reasoning=usage["completion_tokens_details"]["reasoning_tokens"],
        )
        # What the OpenAI integration adds from its response type: raw attributes.
        call.attrs["ai.finish_reason"] = body["choices"][0]["finish_reason"]
        call.attrs["ai.service_tier"] = body["service_tier"]


def run(
    make_call: Callable[[openai.OpenAI, OpenAIEmulator], None],
    client: openai.OpenAI,
    emu: OpenAIEmulator,
    tmp_path: Path,
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[tuple[str, ...], list[dict[str, Any]]]]:
    """Two requests of two users (tiers) each making the call: records, metrics, report rows."""
    with capture() as cap:
        for user, tier in (("u1", "pro"), ("u2", "free")):
            with obs.span("POST /generate", _kind="server") as root:
                root.set(**{"http.route": "/generate", "http.method": "POST"})
                obs.set_user(user, tier)
                make_call(client, emu)
        records = cap.records
        metrics = {
            name: cap.metrics[name].points
            for name in ("ai.requests", "ai.errors", "ai.user_errors", "ai.cost_usd")
        }
        metrics["ai.duration.count"] = {
            labels: point.count for labels, point in cap.metrics["ai.duration"].points.items()
        }
    # No retention: the deterministic clock dates the records 2026-01-01.
    sqlite = SqliteExporter(tmp_path / f"{make_call.__name__}.db", max_age_s=None)
    sqlite.export(records)
    sqlite.shutdown()
    store = Store(tmp_path / f"{make_call.__name__}.db")
    report = {
        by: [{k: v for k, v in row.items() if k not in LATENCY} for row in store.ai(Filters(), by)]
        for by in (("provider", "model"), ("user", "tier"), ("model",))
    }
    store.close()
    shown = [{k: v for k, v in r.items() if k not in PER_CALL} for r in records]
    return shown, metrics, report


def test_a_custom_call_gives_the_same_records_metrics_cost_and_report_as_the_sdk_call(
    client: openai.OpenAI, emu: OpenAIEmulator, tmp_path: Path
) -> None:
    sdk_records, sdk_metrics, sdk_report = run(builtin, client, emu, tmp_path)
    own_records, own_metrics, own_report = run(custom, client, emu, tmp_path)

    ai = [r for r in sdk_records if r["name"] == "ai.request"]
    assert len(ai) == 2 and all(r["cost.usd"] > 0 for r in ai)
    assert {r["ai.modality"] for r in ai} == {"text"}
    # Every field, same keys, same values, but the provider's per-request ids (present on both).
    assert [r.keys() for r in own_records] == [r.keys() for r in sdk_records]
    strip = [{k: v for k, v in r.items() if k not in PROVIDER_IDS} for r in sdk_records]
    assert [{k: v for k, v in r.items() if k not in PROVIDER_IDS} for r in own_records] == strip
    # The cost rolled up to each request's root, by user and tier.
    roots = [r for r in own_records if r["name"] == "POST /generate"]
    assert [(r["user_id"], r["tier"], r["cost.usd"]) for r in roots] == [
        ("u1", "pro", ai[0]["cost.usd"]),
        ("u2", "free", ai[1]["cost.usd"]),
    ]
    assert own_metrics == sdk_metrics
    assert set(own_metrics["ai.cost_usd"]) == {
        ("openai", "gpt-4o-mini", "chat", "/generate", "pro"),
        ("openai", "gpt-4o-mini", "chat", "/generate", "free"),
    }
    assert own_report == sdk_report
    (by_model,) = own_report[("provider", "model")]
    assert (by_model["calls"], by_model["response_models"]) == (2, ["gpt-4o-mini-2024-07-18"])


def test_a_custom_call_around_an_sdk_call_is_one_span_with_the_callers_fields(
    client: openai.OpenAI,
) -> None:
    with capture() as cap, obs.ai_call("openai", "gpt-4o-mini", operation="chat") as call:
        call.set_cache(False)
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
    (record,) = [r for r in cap.spans if r["name"] == "ai.request"]
    assert (record["ai.cache_status"], record["ai.input_tokens"]) == ("miss", 20)
    assert cap.metrics["ai.requests"].points == {("openai", "gpt-4o-mini", "chat"): 1}


def test_dall_e_3_rewritten_prompt_is_recorded_as_transformed(
    client: openai.OpenAI, emu: OpenAIEmulator
) -> None:
    with capture() as cap:
        client.images.generate(model="dall-e-3", prompt="a red fox")
    (record,) = cap.spans
    assert (record["ai.modality"], record["ai.prompt.transformed"]) == ("image", True)
    assert record["ai.prompt.revised"] == "A photorealistic image of a red fox."


def test_every_operation_says_its_modality(client: openai.OpenAI) -> None:
    with capture() as cap:
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)
        client.responses.create(model="gpt-4o-mini", input="hi")
        client.embeddings.create(model="text-embedding-3-small", input="hi")
        client.images.generate(model="gpt-image-1", prompt="a fox")
        with client.chat.completions.stream(model="gpt-4o-mini", messages=HI) as stream:
            list(stream)
    assert [(r["ai.operation"], r["ai.modality"]) for r in cap.spans] == [
        ("chat", "text"),
        ("responses", "text"),
        ("embeddings", "embedding"),
        ("images.generate", "image"),
        ("chat", "text"),
    ]
