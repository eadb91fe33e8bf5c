"""The shared AI-call machinery: one span per logical call, joins, sanitized inputs, privacy,
cost on the span and its root, usage checked where it enters."""

from __future__ import annotations

import json
from typing import Any

import pytest

import obs_middleware as obs
from obs_middleware._core import cost
from obs_middleware._core.config import PricingOptions, RedactionOptions
from obs_middleware._core.span import current_span
from obs_middleware.integrations._ai import ai_call, current_call
from obs_middleware.testing import Capture, capture


def test_one_call_is_one_client_span_with_provider_model_operation(obs_capture: Capture) -> None:
    with obs.span("request"), ai_call("openai", "chat", "gpt-4o-mini") as call:
        call.set_request_id("req_1")
        call.set_tokens(input=20, cached=0, output=10)
    record = obs_capture.span("ai.request")
    assert record == {
        "type": "span",
        "name": "ai.request",
        "trace_id": "00000000000000000000000000000001",
        "span_id": "0000000000000002",
        "parent_id": "0000000000000001",
        "service": "app",
        "environment": "development",
        "start": "2026-01-01T00:00:00.002000Z",
        "duration_ms": 1.0,
        "status": "ok",
        "error_type": None,
        "error_message": None,
        "user_id": None,
        "tier": None,
        "request_id": None,
        "host.name": "test-host",
        "service.instance.id": "0000000000000000",
        "span.kind": "client",
        "ai.provider": "openai",
        "ai.operation": "chat",
        "ai.model": "gpt-4o-mini",
        "ai.request_id": "req_1",
        "ai.input_tokens": 20,
        "ai.cached_tokens": 0,
        "ai.output_tokens": 10,
        "cost.pricing_version": record["cost.pricing_version"],
        "cost.usd": 9e-06,
    }


def test_nested_entry_point_of_same_provider_joins_and_enriches(obs_capture: Capture) -> None:
    with ai_call("replicate", "run", "a/b") as outer:
        with ai_call("replicate", "predictions.create") as inner:
            assert inner is outer
            inner.set_request_id("p1")
        assert current_call("replicate") is outer
        outer.set_model(None, version="v1")
    assert current_call() is None
    record = obs_capture.span("ai.request")
    assert record["ai.operation"] == "run"
    assert record["ai.request_id"] == "p1"
    assert record["ai.model_version"] == "v1"


def test_a_call_is_grouped_by_the_model_asked_for_whatever_the_response_names(
    obs_capture: Capture,
) -> None:
    with ai_call("openai", "chat", "gpt-4o-mini") as call:
        call.set_tokens(input=20, output=10)
        call.set_response_model("gpt-4o-mini-2024-07-18")
    with pytest.raises(RuntimeError), ai_call("openai", "chat", "gpt-4o-mini"):
        raise RuntimeError("busy")
    with ai_call("replicate", "predictions.create") as unnamed:  # a bare version id
        unnamed.set_response_model("a/b")
    answered, failed, bare = obs_capture.spans
    assert (answered["ai.model"], answered["ai.response_model"]) == (
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
    )
    assert (failed["ai.model"], "ai.response_model" in failed) == ("gpt-4o-mini", False)
    assert (bare["ai.model"], bare["ai.response_model"]) == ("a/b", "a/b")
    metrics = obs_capture.metrics
    assert metrics["ai.requests"].points == {
        ("openai", "gpt-4o-mini", "chat"): 2,
        ("replicate", "a/b", "predictions.create"): 1,
    }
    assert metrics["ai.errors"].points == {("openai", "gpt-4o-mini", "chat", "RuntimeError"): 1}
    assert answered["cost.usd"] == 9e-06


def test_another_provider_inside_is_a_child_span(obs_capture: Capture) -> None:
    with ai_call("modal", "remote", "fn"), ai_call("openai", "chat", "gpt-4o"):
        pass
    inner, outer = obs_capture.spans
    assert (inner["ai.provider"], outer["ai.provider"]) == ("openai", "modal")
    assert inner["parent_id"] == outer["span_id"]


def test_exception_is_recorded_and_reraised_keeping_a_finer_status(obs_capture: Capture) -> None:
    with pytest.raises(ValueError, match="refused"), ai_call("openai", "chat", "m") as call:
        call.span.status = "content_violation"
        raise ValueError("refused")
    with pytest.raises(KeyError), ai_call("openai", "chat", "m"):
        raise KeyError("x")
    first, second = obs_capture.spans
    assert (first["status"], first["error_type"]) == ("content_violation", "ValueError")
    assert (second["status"], second["error_type"]) == ("error", "KeyError")
    # The violation is the user's outcome: counted apart from the service's failures.
    assert obs_capture.metrics["ai.errors"].points == {("openai", "m", "chat", "KeyError"): 1}
    assert obs_capture.metrics["ai.user_errors"].points == {
        ("openai", "m", "chat", "content_violation"): 1
    }


# -- inputs --------------------------------------------------------------------------------------
def test_inputs_are_truncated_scrubbed_and_free_of_base64() -> None:
    with capture(redaction=RedactionOptions(prompt_max_chars=40)) as cap:
        with ai_call("replicate", "run", "a/b") as call:
            call.set_inputs(
                params={
                    "prompt": "draw sk-abcdefghijklmnopqrstuvwxyz " + "a" * 60,
                    "image": "data:image/png;base64," + "iVBORw0KGgo" * 50,
                    "mask": "Zm9v" * 40,
                    "steps": 30,
                    "guidance": 7.5,
                    "hd": True,
                    "api_key": "r8_secretsecretsecretsecret",
                    "webhook": "https://example.com/hook?token=abc",
                    "loras": ["x", "y"],
                }
            )
        record = cap.span("ai.request")
    assert record["ai.prompt"] == "draw [REDACTED] " + "a" * 24 + "…"
    assert record["ai.input.image"] == "[BASE64]"
    assert record["ai.input.mask"] == "[BASE64]"
    assert (record["ai.input.steps"], record["ai.input.guidance"], record["ai.input.hd"]) == (
        30,
        7.5,
        True,
    )
    assert not any(
        key in record for key in ("ai.input.api_key", "ai.input.webhook", "ai.input.loras")
    )


def test_many_params_are_capped() -> None:
    with capture() as cap:
        with ai_call("p", "op") as call:
            call.set_inputs(params={f"p{i}": i for i in range(100)})
        record = cap.span("ai.request")
    assert sum(key.startswith("ai.input.") for key in record) == 24


# -- privacy -------------------------------------------------------------------------------------
SECRET_PROMPT = "my very private prompt about Alice"


def exported_text(cap: Capture) -> str:
    return json.dumps(cap.records, default=str)


def test_private_call_exports_no_prompt(obs_capture: Capture) -> None:
    with ai_call("openai", "chat", "gpt-4o", private=True) as call:
        call.set_inputs(SECRET_PROMPT, {"style": SECRET_PROMPT, "n": 1})
    record = obs_capture.span("ai.request")
    assert record["ai.prompt"] == "[PRIVATE]"
    assert record["ai.input.style"] == "[PRIVATE]"
    assert record["ai.input.n"] == 1
    assert record["ai.private"] is True
    assert "Alice" not in exported_text(obs_capture)


def test_trace_marked_private_after_inputs_still_exports_none(obs_capture: Capture) -> None:
    with (
        obs.span("request"),
        pytest.raises(RuntimeError),
        ai_call("openai", "chat", "gpt-4o") as call,
    ):
        call.set_inputs(SECRET_PROMPT)
        obs.mark_private()
        raise RuntimeError(f"provider echoed: {SECRET_PROMPT}")
    record = obs_capture.span("ai.request")
    assert record["ai.prompt"] == "[PRIVATE]"
    assert record["error_message"] == "[PRIVATE]"
    assert "Alice" not in json.dumps(record)


def test_private_trace_before_the_call(obs_capture: Capture) -> None:
    with obs.span("request"):
        obs.mark_private()
        with ai_call("fal", "run") as call:
            call.set_inputs(params={"prompt": SECRET_PROMPT})
    assert obs_capture.span("ai.request")["ai.prompt"] == "[PRIVATE]"
    assert "Alice" not in exported_text(obs_capture)


# -- cost ----------------------------------------------------------------------------------------
def test_root_span_carries_the_summed_cost_of_its_calls(obs_capture: Capture) -> None:
    with obs.span("request"):
        for _ in range(2):
            with ai_call("openai", "chat", "gpt-4o-mini") as call:
                call.set_tokens(input=20, output=10)
        with ai_call("replicate", "run", "black-forest-labs/flux-schnell") as call:
            call.set_images(3)
    root = obs_capture.span("request")
    assert root["cost.usd"] == pytest.approx(2 * 9e-06 + 0.009)
    assert "cost.unknown" not in root


def test_unpriced_call_marks_root_and_carries_a_reason(obs_capture: Capture) -> None:
    with obs.span("request"):
        with ai_call("openai", "chat", "gpt-4o"):
            pass  # no usage reported
        with ai_call("openai", "chat", "gpt-4o") as call:
            call.set_tokens(input=1000, output=0)
    calls = [s for s in obs_capture.spans if s["name"] == "ai.request"]
    assert calls[0]["cost.unknown"] == "usage not reported for per_token"
    assert "cost.usd" not in calls[0]
    root = obs_capture.span("request")
    assert root["cost.usd"] == pytest.approx(0.0025)
    assert root["cost.unknown"] == "some AI calls have no price"


def test_provider_reported_cost_and_declared_unknown(obs_capture: Capture) -> None:
    with ai_call("fal", "run", "x") as call:
        call.set_cost(0.5)
    with ai_call("fal", "run", "x") as call:
        call.set_cost(None, unknown="still running")
    first, second = obs_capture.spans
    assert (first["cost.usd"], first["cost.pricing_version"]) == (0.5, "provider")
    assert second["cost.unknown"] == "still running"


# -- usage a provider reports is checked where it enters ------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [-1, 10**12 + 1, 10**400, 1.5, float("nan"), float("inf"), True, "12", [3]],
    ids=lambda value: repr(value)[:12],
)
def test_a_usage_value_that_is_no_count_is_dropped_counted_and_not_priced(
    obs_capture: Capture, bad: Any
) -> None:
    with obs.span("request"), ai_call("openai", "chat", "gpt-4o-mini") as call:
        call.set_tokens(input=20, output=bad)
        call.set_images(bad)
    record = obs_capture.span("ai.request")
    assert record["ai.input_tokens"] == 20
    assert "ai.output_tokens" not in record and "ai.image_count" not in record
    assert record["ai.usage.invalid"] == "output_tokens,image_count"
    assert record["cost.unknown"] == "invalid usage reported: output_tokens,image_count"
    assert "cost.usd" not in record and "cost.usd" not in obs_capture.span("request")
    assert obs_capture.metrics["obs.dropped"].points == {("invalid_usage:openai",): 2}
    assert obs_capture.metrics["ai.cost_usd"].points == {}


def test_integral_floats_and_int_subclasses_are_counts(obs_capture: Capture) -> None:
    class Tokens(int):
        pass

    with ai_call("openai", "chat", "gpt-4o-mini") as call:
        call.set_tokens(input=20.0, output=Tokens(10))
    record = obs_capture.span("ai.request")
    assert (record["ai.input_tokens"], record["ai.output_tokens"]) == (20, 10)
    assert type(record["ai.input_tokens"]) is type(record["ai.output_tokens"]) is int
    assert record["cost.usd"] == 9e-06


@pytest.mark.parametrize(
    "bad", [-0.5, float("nan"), float("inf"), 10**400, 1e13, "3"], ids=lambda v: repr(v)[:12]
)
def test_seconds_units_pixels_and_provider_cost_must_be_finite_and_non_negative(
    obs_capture: Capture, bad: Any
) -> None:
    with ai_call("modal", "remote", "fn") as call:
        call.set_compute(bad, gpu="A100-80GB", gpu_count=bad)
    with ai_call("fal", "run", "fal-ai/flux/dev") as call:
        call.set_units(bad)
        call.set_images(1, width=bad, height=1024)
    with ai_call("fal", "run", "x") as call:
        call.set_cost(bad)
    compute, units, reported = obs_capture.spans
    assert compute["ai.usage.invalid"] == "gpu_seconds,gpu_count"
    assert units["ai.usage.invalid"] == "billable_units,width"
    assert reported["ai.usage.invalid"] == "cost.usd"
    assert reported["cost.unknown"] == "invalid cost reported"
    for record in (compute, units, reported):
        assert "cost.usd" not in record
    assert obs_capture.metrics["ai.cost_usd"].points == {}


def test_a_negative_price_in_the_table_is_never_added_to_the_cost() -> None:
    prices = {"models": {"openai": {"m": {"per_token": {"input": -1.0, "output": 1.0}}}}}
    with capture(pricing=PricingOptions(prices=prices)) as cap:
        with obs.span("request"), ai_call("openai", "chat", "m") as call:
            call.set_tokens(input=1000, output=0)
        record = cap.span("ai.request")
        assert record["cost.unknown"] == "invalid cost computed: -0.001"
        assert "cost.usd" not in record and "cost.usd" not in cap.span("request")
        assert cap.metrics["ai.cost_usd"].points == {}


def test_pricing_that_raises_still_ends_the_span_and_later_spans_nest_right(
    obs_capture: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_options: object) -> None:
        raise RuntimeError("pricing bug")

    monkeypatch.setattr(cost, "table", broken)
    with obs.span("request") as root:
        for _ in range(2):
            with ai_call("openai", "chat", "gpt-4o-mini") as call:
                call.set_tokens(input=20, output=10)
            assert current_span() is root
        with obs.span("after"):
            pass
    calls = [s for s in obs_capture.spans if s["name"] == "ai.request"]
    assert [c["cost.unknown"] for c in calls] == ["pricing failed"] * 2
    assert obs_capture.span("after")["parent_id"] == obs_capture.span("request")["span_id"]
    assert sum("ai pricing" in r.getMessage() for r in caplog.records) == 1
