"""The AI metrics: every call counted and timed; ``ai.cost_usd`` by route and tier, recorded when
the trace's root ends (or at once for a call made after it ended)."""

from __future__ import annotations

import contextvars

import pytest

import obs_middleware as obs
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture


def test_metrics_count_and_time_every_call(obs_capture: Capture) -> None:
    for _ in range(3):
        with ai_call("fal", "run", "fal-ai/flux/dev"):
            pass
    metrics = obs_capture.metrics
    assert metrics["ai.requests"].points == {("fal", "fal-ai/flux/dev", "run"): 3}
    duration = metrics["ai.duration"].points[("fal", "fal-ai/flux/dev", "run")]
    assert duration.count == 3  # type: ignore[union-attr]
    assert metrics["ai.errors"].points == {}


def test_cost_metric_by_route_and_tier_is_recorded_when_the_root_ends(
    obs_capture: Capture,
) -> None:
    with obs.span("GET") as root:
        obs.set_user("u1", tier="pro")
        with ai_call("openai", "chat", "gpt-4o-mini") as call:
            call.set_tokens(input=20, output=10)
        with ai_call("openai", "chat", "gpt-4o-mini") as call:
            call.set_tokens(input=20, output=10)
        assert obs_capture.metrics["ai.cost_usd"].points == {}
        root.attrs["http.route"] = "/images/{id}"  # the middleware names the root at its end
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {
        ("openai", "gpt-4o-mini", "chat", "/images/{id}", "pro"): pytest.approx(1.8e-05)
    }


def test_cost_metric_of_a_call_made_after_its_root_ended(obs_capture: Capture) -> None:
    # A background task the request started calls the provider once the response is out.
    def background() -> None:
        with ai_call("openai", "chat", "gpt-4o-mini") as call:
            call.set_tokens(20, 0, 10)

    with obs.span("POST") as root:
        root.attrs["http.route"] = "/jobs"
        obs.set_user("u1", tier="pro")
        later = contextvars.copy_context()
    later.run(background)
    assert obs_capture.span("ai.request")["cost.usd"] == pytest.approx(9e-06)
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {("openai", "gpt-4o-mini", "chat", "/jobs", "pro"): pytest.approx(9e-06)}


def test_cost_metric_when_the_call_is_the_root(obs_capture: Capture) -> None:
    with ai_call("openai", "chat", "gpt-4o-mini") as call:
        call.set_tokens(input=20, output=10)
    points = obs_capture.metrics["ai.cost_usd"].points
    assert points == {("openai", "gpt-4o-mini", "chat", "", ""): pytest.approx(9e-06)}
    assert "cost.usd" in obs_capture.span("ai.request")


def test_queue_and_run_time_histograms_by_provider_model_operation(obs_capture: Capture) -> None:
    with ai_call("replicate", "run", "acme/img") as call:
        call.set_queue_ms(250.0)
        call.set_run_ms(1500)
    with ai_call("replicate", "run", "acme/img") as call:
        call.set_run_ms(float("nan"))  # not a duration: dropped, nothing recorded
    labels = ("replicate", "acme/img", "run")
    queue = obs_capture.metrics["ai.queue_time"].points[labels]
    run = obs_capture.metrics["ai.run_time"].points[labels]
    assert (queue.count, queue.sum, run.count, run.sum) == (1, 250.0, 1, 1500.0)
    assert [s.get("ai.run_ms") for s in obs_capture.spans] == [1500.0, None]
