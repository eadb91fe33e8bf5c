"""ComfyUI clients against the emulator: comfy-api-simplified (sync and async) and raw
requests/httpx/aiohttp/websockets clients each make one ``ai.request`` span per prompt, keyed by
its prompt id; WebSocket progress drives ``job.*`` events; node errors fail the span."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import aiohttp
import httpx
import pytest
import requests
import websockets.sync.client
from comfy_api_simplified import ComfyApiWrapper
from comfy_api_simplified.exceptions import ComfyApiError

import obs_middleware as obs
from obs_middleware.integrations import comfyui as obs_comfyui
from obs_middleware.testing import Capture
from obs_middleware.testing.emulators.comfyui import ComfyUIEmulator

from .._ai_checks import ai_spans, only_ai_span, pick

CKPT = "sd_xl_base_1.0.safetensors"


def job_events(cap: Capture) -> list[str]:
    return [e["name"] for e in cap.events if e["name"].startswith("job.")]


def wait_for_ws_messages(socket: Any, prompt_id: str) -> None:
    """Read a sync websockets connection until the prompt's ``executing: null``."""
    while True:
        message = socket.recv(timeout=5)
        if isinstance(message, str):
            data = json.loads(message)["data"]
            if data.get("prompt_id") == prompt_id and data.get("node", "") is None:
                return


def polled_span(cap: Capture, prompt_id: str) -> dict[str, Any]:
    """The prompt's one span, a child of span ``request``, ended by its finished history entry."""
    record = only_ai_span(cap)
    assert record["parent_id"] == cap.span("request")["span_id"]
    assert pick(record, "status", "ai.request_id", "ai.image_count", "ai.stream_end") == {
        "status": "ok",
        "ai.request_id": prompt_id,
        "ai.image_count": 2,
        "ai.stream_end": "done",
    }
    return record


# -- comfy-api-simplified ------------------------------------------------------------------------
def test_queue_and_wait_images_is_one_span_with_prompt_id_images_and_inputs(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    api = ComfyApiWrapper(emu.url)
    with obs.span("request"):
        images = api.queue_and_wait_images(workflow, "Save Image")
    assert sorted(images) == ["fox_00001_00_.png", "fox_00001_01_.png"]
    (prompt_id,) = emu.history
    record = only_ai_span(obs_capture)  # queue_prompt_and_wait → queue_prompt → POST joined
    assert record["parent_id"] == obs_capture.span("request")["span_id"]
    assert pick(
        record,
        "status",
        "ai.provider",
        "ai.operation",
        "ai.modality",
        "ai.model",
        "ai.request_id",
        "ai.prompt",
        "ai.input.steps",
        "ai.input.seed",
        "ai.input.sampler_name",
        "ai.input.width",
        "ai.image_count",
        "ai.width",
        "ai.height",
        "cost.unknown",
    ) == {
        "status": "ok",
        "ai.provider": "comfyui",
        "ai.operation": "prompt",
        "ai.modality": "image",
        "ai.model": CKPT,
        "ai.request_id": prompt_id,
        "ai.prompt": "a red fox in the snow",
        "ai.input.steps": 4,
        "ai.input.seed": 42,
        "ai.input.sampler_name": "euler",
        "ai.input.width": 1024,
        "ai.image_count": 2,
        "ai.width": 1024,
        "ai.height": 768,
        "cost.unknown": f"no price for comfyui model {CKPT}",
    }
    assert record["ai.queue_ms"] >= 0 and record["ai.run_ms"] >= 0
    labels = ("comfyui", record["ai.model"], record["ai.operation"])
    for histogram in ("ai.queue_time", "ai.run_time"):  # queue: to execution_start; run: after
        assert obs_capture.metrics[histogram].points[labels].count == 1


def test_websocket_progress_drives_the_job_lifecycle(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    (prompt_id,) = emu.history
    # Progress events are rate-limited (1 s): the first and the completion (1.0) get through.
    assert job_events(obs_capture) == [
        "job.received",
        "job.started",
        "job.progress",
        "job.progress",
        "job.completed",
    ]
    progress = [e for e in obs_capture.events if e["name"] == "job.progress"]
    assert [(e["job.step"], e["job.total"], e["job.progress"]) for e in progress] == [
        (1, 4, 0.25),
        (4, 4, 1.0),
    ]
    completed = obs_capture.events[-1]
    assert pick(completed, "job.id", "job.service_type", "ai.model") == {
        "job.id": prompt_id,
        "job.service_type": "comfyui",
        "ai.model": CKPT,
    }
    job = obs_capture.span("job comfyui")
    assert job["parent_id"] == only_ai_span(obs_capture)["span_id"]
    assert pick(job, "status", "job.state", "job.progress") == {
        "status": "ok",
        "job.state": "completed",
        "job.progress": 1.0,
    }
    assert job["job.queue_ms"] >= 0


async def test_async_queue_prompt_and_wait_is_one_span(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    api = ComfyApiWrapper(emu.url)
    async with obs.span("request"):
        prompt_id, previews = await api.queue_prompt_and_wait(workflow)
    assert previews == []
    record = only_ai_span(obs_capture)
    assert pick(record, "ai.request_id", "ai.image_count", "status") == {
        "ai.request_id": prompt_id,
        "ai.image_count": 2,
        "status": "ok",
    }
    assert job_events(obs_capture)[-1] == "job.completed"


async def test_binary_previews_are_counted(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    emu.previews = True
    _, previews = await ComfyApiWrapper(emu.url).queue_prompt_and_wait(workflow)
    assert len(previews) == 4  # one per sampler step
    record = only_ai_span(obs_capture)
    assert record["ai.preview_count"] == 4
    assert record["ai.output_bytes"] == sum(len(p) for p in previews)


def test_node_error_fails_the_span_and_the_job(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    emu.fail_node("VAEDecode", "Allocation on device failed", exception_type="OutOfMemoryError")
    with pytest.raises(ComfyApiError):
        ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "error_type", "ai.failed_node") == {
        "status": "error",
        "error_type": "ComfyApiError",  # what reached the app; the node's error is on the job
        "ai.failed_node": "8:VAEDecode",
    }
    assert job_events(obs_capture)[-1] == "job.failed"
    failed = obs_capture.events[-1]
    assert pick(failed, "status", "error_type", "error_message") == {
        "status": "error",
        "error_type": "OutOfMemoryError",
        "error_message": "Allocation on device failed",
    }
    assert obs_capture.span("job comfyui")["job.state"] == "failed"


def test_rejected_prompt_is_an_error_span_with_node_errors_and_no_job(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    emu.reject_node("KSampler", "Value 'euler_x' not in list", error_type="value_not_in_list")
    with pytest.raises(ComfyApiError):
        ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    record = only_ai_span(obs_capture)
    assert pick(
        record, "status", "error_type", "http.status_code", "ai.provider_error", "ai.node_errors"
    ) == {
        "status": "error",
        "error_type": "ComfyApiError",
        "http.status_code": 400,
        "ai.provider_error": "prompt_outputs_failed_validation",
        "ai.node_errors": "3:KSampler:value_not_in_list",
    }
    assert job_events(obs_capture) == []


# -- any client: the protocol hooks --------------------------------------------------------------
def test_requests_post_then_history_polling_is_one_span_ending_at_completion(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    with obs.span("request"):
        reply = requests.post(f"{emu.url}/prompt", json={"prompt": workflow}, timeout=5)
        prompt_id = reply.json()["prompt_id"]
        assert ai_spans(obs_capture) == []  # running: the span is open
        for _ in range(200):
            history = requests.get(f"{emu.url}/history/{prompt_id}", timeout=5).json()
            if history:
                break
            time.sleep(0.005)
    record = polled_span(obs_capture, prompt_id)
    assert record["ai.run_ms"] >= 0 and record["ai.queue_ms"] >= 0
    assert job_events(obs_capture) == []  # no WebSocket seen: no job lifecycle


def test_httpx_async_post_then_history_polling_is_one_span_ending_at_completion(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    async def run() -> str:
        async with httpx.AsyncClient(base_url=emu.url) as http:
            # Another POST and GET of the app pass the hooks untouched.
            assert (await http.post("/interrupt")).status_code == 200
            reply = await http.post("/prompt", json={"prompt": workflow})
            prompt_id: str = reply.json()["prompt_id"]
            for _ in range(200):
                if (await http.get(f"/history/{prompt_id}")).json():
                    return prompt_id
                await asyncio.sleep(0.005)
        raise AssertionError("the prompt never finished")

    with obs.span("request"):
        prompt_id = asyncio.run(run())
    polled_span(obs_capture, prompt_id)


def test_httpx_post_and_websockets_client_drive_span_and_job(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    client_id = uuid.uuid4().hex
    ws_url = emu.url.replace("http", "ws") + f"/ws?clientId={client_id}"
    with httpx.Client() as http, websockets.sync.client.connect(ws_url) as socket:
        reply = http.post(f"{emu.url}/prompt", json={"prompt": workflow, "client_id": client_id})
        prompt_id = reply.json()["prompt_id"]
        wait_for_ws_messages(socket, prompt_id)
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "ai.request_id", "ai.image_count") == {
        "status": "ok",
        "ai.request_id": prompt_id,
        "ai.image_count": 2,
    }
    assert job_events(obs_capture)[0] == "job.received"
    assert job_events(obs_capture)[-1] == "job.completed"


def test_interrupted_prompt_is_a_cancelled_span_and_job(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    emu.step_s = 0.05
    client_id = uuid.uuid4().hex
    ws_url = emu.url.replace("http", "ws") + f"/ws?clientId={client_id}"
    with websockets.sync.client.connect(ws_url) as socket:
        reply = requests.post(
            f"{emu.url}/prompt", json={"prompt": workflow, "client_id": client_id}, timeout=5
        )
        prompt_id = reply.json()["prompt_id"]
        while json.loads(socket.recv(timeout=5))["type"] != "progress":
            pass
        requests.post(f"{emu.url}/interrupt", timeout=5)
        wait_for_ws_messages(socket, prompt_id)
    record = only_ai_span(obs_capture)
    assert (record["status"], record["error_type"]) == ("cancelled", "execution_interrupted")
    assert obs_capture.events[-1]["name"] == "job.failed"
    assert obs_capture.events[-1]["status"] == "cancelled"


async def test_aiohttp_post_and_websocket_drive_span_and_job(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{emu.url}/prompt", json={"prompt": workflow, "client_id": client_id}
        ) as reply:
            prompt_id = (await reply.json())["prompt_id"]  # the hook's read left the body intact
        async with session.ws_connect(f"{emu.url}/ws?clientId={client_id}") as socket:
            async for message in socket:
                data = json.loads(message.data)["data"] if message.type.name == "TEXT" else {}
                if data.get("prompt_id") == prompt_id and data.get("node", "") is None:
                    break
    record = only_ai_span(obs_capture)
    assert pick(record, "status", "ai.request_id", "ai.image_count", "ai.model") == {
        "status": "ok",
        "ai.request_id": prompt_id,
        "ai.image_count": 2,
        "ai.model": CKPT,
    }
    assert job_events(obs_capture)[-1] == "job.completed"


async def test_concurrent_prompts_are_kept_apart_by_prompt_id(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    api = ComfyApiWrapper(emu.url)
    other = {
        **workflow,
        "6": {**workflow["6"], "inputs": {**workflow["6"]["inputs"], "text": "owl"}},
    }
    results = await asyncio.gather(
        api.queue_prompt_and_wait(workflow), api.queue_prompt_and_wait(other)
    )
    by_prompt = {s["ai.prompt"]: s["ai.request_id"] for s in ai_spans(obs_capture)}
    assert by_prompt == {"a red fox in the snow": results[0][0], "owl": results[1][0]}
    completed = [e["job.id"] for e in obs_capture.events if e["name"] == "job.completed"]
    assert sorted(completed) == sorted(r[0] for r in results)


def test_other_posts_to_a_prompt_path_are_left_alone(
    emu: ComfyUIEmulator, obs_capture: Capture
) -> None:
    reply = requests.post(f"{emu.url}/prompt", json={"prompt": "just text"}, timeout=5)
    assert reply.status_code == 400
    assert ai_spans(obs_capture) == []


def test_private_trace_exports_no_prompt(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    with obs.span("request"):
        obs.mark_private()
        ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    assert only_ai_span(obs_capture)["ai.prompt"] == "[PRIVATE]"
    assert "red fox" not in str(obs_capture.records)


def test_unpatch_stops_tracing(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    obs_comfyui.unpatch()
    ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    assert ai_spans(obs_capture) == [] and job_events(obs_capture) == []
    obs_comfyui.patch()
    ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    assert len(ai_spans(obs_capture)) == 1


def test_instrument_all_patches_comfyui_at_once(
    emu: ComfyUIEmulator, workflow: dict[str, Any], obs_capture: Capture
) -> None:
    report = obs.instrument_all(only=["comfyui"])
    try:
        assert [(o.name, o.status) for o in report] == [("comfyui", "patched")]
        ComfyApiWrapper(emu.url).queue_and_wait_images(workflow, "Save Image")
    finally:
        obs.uninstrument_all()
    assert only_ai_span(obs_capture)["ai.operation"] == "prompt"
