"""modal's real code (synchronicity, grpclib) against the emulator: one ``ai.request`` span per
``remote``, ``remote.aio``, ``spawn``, ``FunctionCall.get`` and ``remote_gen``, with the function
call id, queue and run time, the GPU and its cost, nested under the caller's span."""

from __future__ import annotations

import asyncio
from typing import Any

import modal
import pytest
from modal.exception import FunctionTimeoutError, InternalFailure

import obs_middleware as obs
from obs_middleware.integrations import modal as obs_modal
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.modal import ModalEmulator

from .._ai_checks import ai_spans, only_ai_span, pick
from .conftest import Rejected

A100_PER_S = 0.000694
H100_PER_S = 0.001097


def calls(emu: ModalEmulator) -> list[str]:
    return [name for name, _ in emu.requests if name == "FunctionMap"]


def test_remote_is_one_span_with_call_id_timings_gpu_and_cost(
    lookup: Any, emu: ModalEmulator, obs_capture: Capture
) -> None:
    with obs.span("request"):
        result = lookup("render").remote("a red fox", steps=2)
    assert result == ["a red fox:0", "a red fox:1"]
    record = only_ai_span(obs_capture)
    assert record["parent_id"] == obs_capture.span("request")["span_id"]  # across the loop thread
    assert pick(
        record,
        "span.kind",
        "status",
        "ai.provider",
        "ai.operation",
        "ai.modality",
        "ai.model",
        "ai.app_id",
        "ai.input.arg0",
        "ai.input.steps",
        "ai.gpu",
        "ai.output_count",
    ) == {
        "span.kind": "client",
        "status": "ok",
        "ai.provider": "modal",
        "ai.operation": "remote",
        "ai.modality": "image",
        "ai.model": "render",
        "ai.app_id": "ap-emulator",
        "ai.input.arg0": "a red fox",
        "ai.input.steps": 2,
        "ai.gpu": "A100-80GB",
        "ai.output_count": 2,
    }
    assert record["ai.request_id"].startswith("fc-")
    assert record["ai.queue_ms"] >= 5  # queue_s=0.01 on the emulator
    assert record["ai.run_ms"] >= 5  # latency_s=0.01
    assert record["cost.usd"] == pytest.approx(record["ai.gpu_seconds"] * A100_PER_S, abs=1e-9)
    assert obs_capture.span("request")["cost.usd"] == record["cost.usd"]


def test_gpu_count_multiplies_the_cost(lookup: Any, obs_capture: Capture) -> None:
    lookup("render_h100").remote("x")
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.gpu", "ai.gpu_count") == {"ai.gpu": "H100", "ai.gpu_count": 2}
    assert record["cost.usd"] == pytest.approx(record["ai.gpu_seconds"] * 2 * H100_PER_S, abs=1e-9)


async def test_remote_aio_is_one_span_under_the_caller(lookup: Any, obs_capture: Capture) -> None:
    function = lookup("render")
    async with obs.span("request"):
        results = await asyncio.gather(function.remote.aio("a"), function.remote.aio("b"))
    assert [r[0] for r in results] == ["a:0", "b:0"]
    spans = ai_spans(obs_capture)
    assert len(spans) == 2
    request = obs_capture.span("request")
    assert {s["parent_id"] for s in spans} == {request["span_id"]}
    assert {s["ai.input.arg0"] for s in spans} == {"a", "b"}
    assert len({s["ai.request_id"] for s in spans}) == 2


def test_spawn_and_get_are_two_spans_sharing_the_call_id(lookup: Any, obs_capture: Capture) -> None:
    call = lookup("render").spawn("x", steps=1)
    assert call.get() == ["x:0"]
    spawn, get = ai_spans(obs_capture)
    assert pick(spawn, "ai.operation", "ai.model", "ai.request_id", "cost.unknown") == {
        "ai.operation": "spawn",
        "ai.model": "render",
        "ai.request_id": call.object_id,
        "cost.unknown": "usage not reported for per_gpu_second",  # it has not run yet
    }
    assert pick(get, "ai.operation", "ai.model", "ai.request_id", "ai.gpu") == {
        "ai.operation": "get",
        "ai.model": "render",  # remembered from the spawn
        "ai.request_id": call.object_id,
        "ai.gpu": "A100-80GB",
    }
    assert get["cost.usd"] == pytest.approx(get["ai.gpu_seconds"] * A100_PER_S, abs=1e-9)
    assert get["ai.queue_ms"] >= 0


async def test_spawn_aio_is_seen(lookup: Any, obs_capture: Capture) -> None:
    call = await lookup("render").spawn.aio("x")
    assert await call.get.aio() == ["x:0", "x:1", "x:2", "x:3"]
    assert [s["ai.operation"] for s in ai_spans(obs_capture)] == ["spawn", "get"]


def test_remote_gen_is_a_stream_span_ending_with_the_iteration(
    lookup: Any, obs_capture: Capture
) -> None:
    items = list(lookup("frames").remote_gen(3))
    assert items == [b"\x00" * 8, b"\x01" * 8, b"\x02" * 8]
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.operation", "ai.output_count", "ai.stream_end", "ai.gpu") == {
        "ai.operation": "remote_gen",
        "ai.output_count": 3,
        "ai.stream_end": "done",
        "ai.gpu": "cpu",
    }
    assert record["ai.gpu_count"] == 2 and record["cost.usd"] > 0
    assert record["ai.request_id"].startswith("fc-")


def test_remote_exception_is_an_error_span(lookup: Any, obs_capture: Capture) -> None:
    with pytest.raises(Rejected, match="refused: x"):
        lookup("reject").remote("x")
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_type", "error_message", "ai.modal.result_status") == {
        "status": "error",
        "error_type": "Rejected",
        "error_message": "refused: x",
        "ai.modal.result_status": 2,  # GENERIC_STATUS_FAILURE
    }
    assert obs_capture.metrics["ai.errors"].points == {("modal", "reject", "remote", "Rejected"): 1}


@pytest.mark.parametrize(
    ("name", "error"),
    [("too_slow", FunctionTimeoutError), ("crashed", InternalFailure)],
)
def test_modal_failure_statuses_are_error_spans(
    lookup: Any, obs_capture: Capture, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        lookup(name).remote()
    assert pick(only_ai_span(obs_capture), "status", "error_type") == {
        "status": "error",
        "error_type": error.__name__,
    }


def test_unknown_function_fails_before_any_span(emu: ModalEmulator, obs_capture: Capture) -> None:
    with pytest.raises(modal.exception.NotFoundError):
        modal.Function.from_name("images", "missing").remote()
    assert ai_spans(obs_capture) == []
    assert calls(emu) == []


def test_private_trace_exports_no_prompt(lookup: Any, obs_capture: Capture) -> None:
    with obs.span("request"):
        obs.mark_private()
        lookup("render").remote(prompt="my secret prompt", steps=1)
    assert only_ai_span(obs_capture)["ai.prompt"] == "[PRIVATE]"
    assert "secret" not in str(obs_capture.records)


def test_unpatch_stops_tracing_and_patch_again_resumes(lookup: Any, obs_capture: Capture) -> None:
    obs_modal.patch()  # idempotent
    function = lookup("render")
    function.remote("x")
    obs_modal.unpatch()
    function.remote("x")
    obs_modal.patch()
    function.remote("x")
    assert len(ai_spans(obs_capture)) == 2


def test_instrument_all_patches_modal_within_its_supported_range(
    lookup: Any, obs_capture: Capture
) -> None:
    report = obs.instrument_all(only=["modal"])
    try:
        assert [(o.name, o.status, o.supported) for o in report] == [
            ("modal", "patched", ">=1.0,<2")
        ]
        lookup("render").remote("x")
    finally:
        obs.uninstrument_all()
    assert only_ai_span(obs_capture)["ai.operation"] == "remote"
