"""ComfyUI integration without a server: recognizing a prompt, its inputs, WebSocket messages
driving the call and the job, history replies, rejected prompts; patch and unpatch."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
import wrapt

from obs_middleware.integrations import comfyui as obs_comfyui
from obs_middleware.integrations._ai import ai_call
from obs_middleware.integrations.comfyui import _tracking, _transports, _workflow
from obs_middleware.testing import Capture

WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 5, "steps": 2, "cfg": 6.5, "positive": ["6", 0], "negative": ["7", 0]},
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-dev.safetensors"}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk"}},
}


def ws(kind: str, **data: Any) -> str:
    return json.dumps({"type": kind, "data": data})


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    _tracking.prompts.clear()
    _tracking.executing.clear()


def test_a_prompt_body_is_recognized_in_any_encoding() -> None:
    body = {"prompt": WORKFLOW, "client_id": "c1"}
    assert _workflow.workflow(json.dumps(body).encode()) == WORKFLOW
    assert _workflow.workflow(json.dumps(body)) == WORKFLOW
    assert _workflow.workflow(body) == WORKFLOW
    assert _workflow.workflow(b'{"prompt": "text"}') is None
    assert _workflow.workflow(b"prompt=1") is None
    assert _workflow.workflow(None) is None


def test_only_prompt_posts_and_history_gets_are_candidates() -> None:
    assert _transports._kind("POST", "http://h:8188/prompt") == "prompt"
    assert _transports._kind("POST", "http://h/api/prompt?x=1") == "prompt"
    assert _transports._kind("GET", "http://h/history/abc") == "history"
    assert _transports._kind("GET", "http://h/prompt") is None
    assert _transports._kind("PUT", "http://h/prompt") is None


def test_workflow_inputs_follow_the_sampler_to_its_positive_prompt(obs_capture: Capture) -> None:
    with ai_call("comfyui", "prompt") as call:
        _workflow.record_workflow(call, WORKFLOW)
    record = obs_capture.span("ai.request")
    assert {k: v for k, v in record.items() if k.startswith("ai.")} == {
        "ai.provider": "comfyui",
        "ai.operation": "prompt",
        "ai.model": "flux1-dev.safetensors",
        "ai.prompt": "a lighthouse at dusk",  # not the first text node: the positive one
        "ai.input.nodes": 5,
        "ai.input.seed": 5,
        "ai.input.steps": 2,
        "ai.input.cfg": 6.5,
        "ai.input.width": 832,
        "ai.input.height": 1216,
        # the same, under the names every image provider shares
        "ai.image.width": 832,
        "ai.image.height": 1216,
        "ai.image.steps": 2,
        "ai.image.seed": 5,
        "ai.image.guidance": 6.5,
    }


def test_websocket_messages_enrich_the_call_and_drive_the_job(obs_capture: Capture) -> None:
    with ai_call("comfyui", "prompt") as call:
        _tracking.on_prompt_reply(call, WORKFLOW, 200, {"prompt_id": "p1", "number": 3}, False)
        for message in (
            ws("status", status={"exec_info": {"queue_remaining": 1}}),
            ws("execution_start", prompt_id="p1", timestamp=1000),
            ws("execution_cached", prompt_id="p1", nodes=["4"], timestamp=1000),
            ws("executing", prompt_id="p1", node="3"),
            ws("progress", prompt_id="p1", node="3", value=1, max=2),
            ws("progress", prompt_id="p1", node="3", value=2, max=2),
            b"\x00\x00\x00\x01\x00\x00\x00\x02preview",
            ws("executed", prompt_id="p1", node="9", output={"images": [{"filename": "a"}]}),
            ws("progress", prompt_id="other", node="3", value=1, max=2),
            "not json",
            ws("execution_success", prompt_id="p1", timestamp=3500),
        ):
            _tracking.on_ws(message)
    record = obs_capture.span("ai.request")
    assert {k: v for k, v in record.items() if k.startswith("ai.")} == {
        "ai.provider": "comfyui",
        "ai.operation": "prompt",
        "ai.request_id": "p1",
        "ai.comfyui.number": 3,
        "ai.queue_ms": record["ai.queue_ms"],
        "ai.cached_nodes": 1,
        "ai.image_count": 1,
        "ai.width": 832,
        "ai.height": 1216,
        "ai.preview_count": 1,
        "ai.run_ms": 2500.0,
        "ai.gpu_seconds": 2.5,
    }
    events = [(e["name"], e.get("job.progress")) for e in obs_capture.events]
    assert events == [
        ("job.received", None),
        ("job.started", None),
        ("job.progress", 0.5),
        ("job.progress", 1.0),
        ("job.completed", None),
    ]
    assert obs_capture.span("job comfyui")["job.id"] == "p1"
    assert _tracking.prompts == {}


def test_execution_error_fails_call_and_job(obs_capture: Capture) -> None:
    with ai_call("comfyui", "prompt") as call:
        _tracking.on_prompt_reply(call, WORKFLOW, 200, {"prompt_id": "p2"}, False)
        _tracking.on_ws(ws("execution_start", prompt_id="p2", timestamp=1))
        _tracking.on_ws(
            ws(
                "execution_error",
                prompt_id="p2",
                node_id="3",
                node_type="KSampler",
                exception_type="RuntimeError",
                exception_message="CUDA error",
                timestamp=2,
            )
        )
    record = obs_capture.span("ai.request")
    assert (record["status"], record["error_type"], record["ai.failed_node"]) == (
        "error",
        "RuntimeError",
        "3:KSampler",
    )
    failed = obs_capture.events[-1]
    assert (failed["name"], failed["error_type"], failed["error_message"]) == (
        "job.failed",
        "RuntimeError",
        "CUDA error",
    )


def test_an_owned_prompt_ends_when_its_history_entry_completes(obs_capture: Capture) -> None:
    with ai_call("comfyui", "prompt") as call:
        _tracking.on_prompt_reply(call, WORKFLOW, 200, {"prompt_id": "p3"}, True)
    assert obs_capture.spans == []  # still running
    _tracking.on_history("p3", {})  # not done yet: ComfyUI answers {}
    assert obs_capture.spans == []
    entry = {
        "outputs": {"9": {"images": [{"filename": "a"}, {"filename": "b"}]}},
        "status": {
            "status_str": "success",
            "completed": True,
            "messages": [
                ["execution_start", {"prompt_id": "p3", "timestamp": 10_000}],
                ["execution_success", {"prompt_id": "p3", "timestamp": 12_000}],
            ],
        },
    }
    _tracking.on_history("p3", {"p3": entry})
    record = obs_capture.span("ai.request")
    assert (record["ai.image_count"], record["ai.run_ms"], record["ai.stream_end"]) == (
        2,
        2000.0,
        "done",
    )
    assert [e["name"] for e in obs_capture.events] == []  # no WebSocket: no job


def test_a_rejected_prompt_records_the_node_errors(obs_capture: Capture) -> None:
    reply = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed"},
        "node_errors": {
            "3": {"class_type": "KSampler", "errors": [{"type": "value_not_in_list"}]},
        },
    }
    with ai_call("comfyui", "prompt") as call:
        _tracking.on_prompt_reply(call, WORKFLOW, 400, reply, True)
    record = obs_capture.span("ai.request")
    assert (
        record["status"],
        record["error_type"],
        record["http.status_code"],
        record["ai.node_errors"],
    ) == ("error", "prompt_outputs_failed_validation", 400, "3:KSampler:value_not_in_list")


def test_patch_hooks_transports_and_unpatch_restores_them() -> None:
    original = vars(requests.Session)["send"]
    try:
        obs_comfyui.patch()
        obs_comfyui.patch()
        assert isinstance(vars(requests.Session)["send"], wrapt.FunctionWrapper)
        assert vars(requests.Session)["send"].__wrapped__ is original
    finally:
        obs_comfyui.unpatch()
    obs_comfyui.unpatch()
    assert vars(requests.Session)["send"] is original


def test_a_request_that_is_no_prompt_awaits_the_clients_own_coroutine() -> None:
    # Every POST of the app (an OpenAI call, say) passes this hook: it adds no frame around it.
    client_send = vars(httpx.AsyncClient)["send"]

    async def main() -> None:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"ok": True}))
        async with httpx.AsyncClient(transport=transport) as client:
            other = client.send(client.build_request("POST", "http://h/v1/chat", json={"a": 1}))
            assert other.cr_code is client_send.__code__
            assert (await other).json() == {"ok": True}
            body = {"prompt": WORKFLOW}
            prompt = client.send(client.build_request("POST", "http://h/prompt", json=body))
            assert prompt.cr_code is _transports._async_send.__code__
            prompt.close()

    try:
        obs_comfyui.patch()
        asyncio.run(main())
    finally:
        obs_comfyui.unpatch()


def test_a_transport_imported_after_patch_is_patched_on_import(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "obs_fake_transport.py").write_text(
        "class Session:\n    def send(self, request):\n        return request\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    layers = {
        **obs_comfyui._LAYERS,
        "obs_fake_transport": (("Session.send", lambda w, i, a, k: "traced"),),
    }
    monkeypatch.setattr(obs_comfyui, "_LAYERS", layers)
    try:
        obs_comfyui.patch()
        import obs_fake_transport  # noqa: PLC0415 - imported after the patch on purpose

        assert obs_fake_transport.Session().send("r") == "traced"
    finally:
        obs_comfyui.unpatch()
        sys.modules.pop("obs_fake_transport", None)
    assert obs_fake_transport.Session().send("r") == "r"
