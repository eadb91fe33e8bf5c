"""fal integration without a server: status polls, headers and results enrich the active call;
patch re-binds the module aliases and unpatch restores them."""

from __future__ import annotations

import time

import fal_client
import pytest
import wrapt
from fal_client import client as fal_client_module

from obs_middleware.integrations import fal as obs_fal
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture


def test_status_polls_record_queue_position_wait_run_time_and_events(obs_capture: Capture) -> None:
    with ai_call("fal", "subscribe", "fal-ai/flux/dev") as call:
        obs_fal._queue(call).submitted = time.monotonic() - 0.25
        obs_fal._on_status(call, fal_client.Queued(position=4))
        obs_fal._on_status(call, fal_client.Queued(position=4))  # unchanged: no new event
        obs_fal._on_status(call, fal_client.Queued(position=1))
        obs_fal._on_status(call, fal_client.InProgress(logs=None))
        obs_fal._on_status(call, fal_client.Completed(logs=None, metrics={"inference_time": 1.5}))
    record = obs_capture.span("ai.request")
    assert record["ai.queue_position"] == 4
    assert record["ai.queue_ms"] >= 250
    assert record["ai.run_ms"] == 1500.0
    assert [(e["name"], e.get("position")) for e in record["events"]] == [
        ("fal.queued", 4),
        ("fal.queued", 1),
        ("fal.in_progress", None),
    ]


def test_completed_without_progress_subtracts_the_run_from_the_wait(obs_capture: Capture) -> None:
    with ai_call("fal", "subscribe", "fal-ai/flux/dev") as call:
        obs_fal._queue(call).submitted = time.monotonic() - 2.0
        obs_fal._on_status(call, fal_client.Completed(logs=None, metrics={"inference_time": 1.5}))
    assert 400 <= obs_capture.span("ai.request")["ai.queue_ms"] < 1000


def test_completed_with_an_error_fails_the_call(obs_capture: Capture) -> None:
    with ai_call("fal", "subscribe", "fal-ai/flux/dev") as call:
        obs_fal._on_status(
            call,
            fal_client.Completed(
                logs=None, metrics={}, error="NSFW input", error_type="content_policy"
            ),
        )
    record = obs_capture.span("ai.request")
    assert (record["status"], record["error_type"], record["error_message"]) == (
        "error",
        "content_policy",
        "NSFW input",
    )


def test_headers_give_request_id_and_billable_units_priced_per_unit(obs_capture: Capture) -> None:
    with ai_call("fal", "run", "fal-ai/flux/schnell") as call:
        obs_fal._on_headers(call, {"x-fal-request-id": "req-1", "x-fal-billable-units": "3"})
    record = obs_capture.span("ai.request")
    assert (record["ai.request_id"], record["ai.billable_units"], record["cost.usd"]) == (
        "req-1",
        3.0,
        0.009,
    )


@pytest.mark.parametrize("units", ["lots", "-2", "inf", "nan"])
def test_billable_units_that_are_no_amount_are_dropped_and_the_call_unpriced(
    obs_capture: Capture, units: str
) -> None:
    with ai_call("fal", "run", "fal-ai/flux/schnell") as call:
        obs_fal._on_headers(call, {"x-fal-request-id": "req-1", "x-fal-billable-units": units})
    record = obs_capture.span("ai.request")
    assert record["ai.request_id"] == "req-1"
    assert "ai.billable_units" not in record and "cost.usd" not in record
    assert record["ai.usage.invalid"] == "billable_units"


def test_results_give_image_count_size_and_flags(obs_capture: Capture) -> None:
    with ai_call("fal", "run", "fal-ai/x") as call:
        obs_fal._record_result(
            call,
            {
                "images": [{"url": "u", "width": 768, "height": 512}, {"url": "v"}],
                "has_nsfw_concepts": [True, False],
                "timings": {"inference": 0.25},
            },
        )
    record = obs_capture.span("ai.request")
    assert (
        record["ai.image_count"],
        record["ai.width"],
        record["ai.height"],
        record["ai.nsfw_flagged"],
        record["ai.run_ms"],
    ) == (2, 768, 512, 1, 250.0)


def test_single_image_results_count_one(obs_capture: Capture) -> None:
    with ai_call("fal", "run", "fal-ai/x") as call:
        obs_fal._record_result(call, {"image": {"url": "u", "width": 64, "height": 64}})
    assert obs_capture.span("ai.request")["ai.image_count"] == 1


def test_patch_rebinds_aliases_is_idempotent_and_unpatch_restores() -> None:
    original_run = fal_client.run
    try:
        obs_fal.patch()
        obs_fal.patch()
        assert isinstance(vars(fal_client.SyncClient)["run"], wrapt.FunctionWrapper)
        assert isinstance(vars(fal_client_module)["_maybe_retry_request"], wrapt.FunctionWrapper)
        assert fal_client.run is not original_run
        assert fal_client.run_async.__self__ is fal_client.async_client
    finally:
        obs_fal.unpatch()
    obs_fal.unpatch()
    assert fal_client.run is original_run
    assert not isinstance(vars(fal_client.SyncClient)["run"], wrapt.FunctionWrapper)
    assert not isinstance(vars(fal_client_module)["handle_response_headers"], wrapt.FunctionWrapper)
