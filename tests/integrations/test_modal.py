"""Modal integration without a server: hardware from the function's info, the user's arguments,
output timings to queue/run time and cost; patch and unpatch of the implementation methods."""

from __future__ import annotations

import time
from types import SimpleNamespace

import wrapt
from modal import _functions
from modal_proto import api_pb2

from obs_middleware.integrations import modal as obs_modal
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture


def test_hardware_is_the_first_gpu_else_cpu_cores() -> None:
    assert obs_modal._hardware(SimpleNamespace(gpus=[("H100", 2)], cpu=4.0)) == ("H100", 2)
    assert obs_modal._hardware(SimpleNamespace(gpus=[], cpu=(1.5, 3.0))) == ("cpu", 2)
    assert obs_modal._hardware(SimpleNamespace(gpus=[], cpu=None)) == ("cpu", 1)
    assert obs_modal._hardware(None) == (None, 1)


def test_target_names_class_methods() -> None:
    function = SimpleNamespace(
        _function_name="Renderer.*",
        _use_method_name="generate",
        _app_id="ap-1",
        _function_info=SimpleNamespace(gpus=[("L4", 1)], cpu=None),
    )
    target = obs_modal._target(function)
    assert (target.model, target.app_id, target.gpu, target.gpu_count) == (
        "Renderer.generate",
        "ap-1",
        "L4",
        1,
    )


def test_call_args_accepts_positional_and_keyword_forms() -> None:
    assert obs_modal._call_args((("a",), {"k": 1}), {}) == (("a",), {"k": 1})
    assert obs_modal._call_args((), {"args": ("b",), "kwargs": {}}) == (("b",), {})


def test_outputs_give_run_and_queue_time_ids_and_gpu_cost(obs_capture: Capture) -> None:
    now = time.time()
    response = api_pb2.FunctionGetOutputsResponse(
        outputs=[
            api_pb2.FunctionGetOutputsItem(
                input_id="in-1",
                task_id="ta-1",
                retry_count=1,
                input_started_at=now - 2.0,
                output_created_at=now,
                result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS),
            )
        ]
    )
    with ai_call("modal", "remote", "render") as call:
        target = obs_modal._Target("render", "ap-1", "A100-80GB", 1)
        target.submitted = now - 2.5
        call.handle = target
        obs_modal._on_outputs(call, response)
    record = obs_capture.span("ai.request")
    assert record["ai.run_ms"] == 2000.0
    assert 499 <= record["ai.queue_ms"] <= 501
    assert (record["ai.modal.input_id"], record["ai.modal.task_id"]) == ("in-1", "ta-1")
    assert record["ai.modal.retry_count"] == 1
    assert (record["ai.gpu"], record["ai.gpu_seconds"]) == ("A100-80GB", 2.0)
    assert record["cost.usd"] == 2.0 * 0.000694


def test_empty_outputs_change_nothing(obs_capture: Capture) -> None:
    with ai_call("modal", "get") as call:
        obs_modal._on_outputs(call, api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=1))
    assert "ai.run_ms" not in obs_capture.span("ai.request")


def test_patch_is_idempotent_and_unpatch_restores_the_impl_methods() -> None:
    original = vars(_functions._Function)["_call_function"]
    create = vars(_functions._Invocation)["create"]
    try:
        obs_modal.patch()
        obs_modal.patch()
        assert isinstance(vars(_functions._Function)["_call_function"], wrapt.FunctionWrapper)
        assert isinstance(vars(_functions._Invocation)["create"], wrapt.FunctionWrapper)
    finally:
        obs_modal.unpatch()
    obs_modal.unpatch()
    assert vars(_functions._Function)["_call_function"] is original
    assert vars(_functions._Invocation)["create"] is create  # the staticmethod itself
