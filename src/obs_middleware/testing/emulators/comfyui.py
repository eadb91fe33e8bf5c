"""ComfyUI emulator: the HTTP API and the ``/ws`` progress socket of a ComfyUI server.

Any client works against it (``comfy-api-simplified``, aiohttp or websockets scripts)::

    with ComfyUIEmulator(step_s=0.01) as emu:
        api = ComfyApiWrapper(emu.url)
        api.queue_and_wait_images(workflow, "Save Image")

HTTP: ``POST /prompt`` (validation: unknown node types and ``reject_node`` answer 400 with
``error`` and ``node_errors``), ``GET /prompt``, ``/queue``, ``/history[/<id>]``, ``/view``
(PNG of the generated size), ``/system_stats``, ``/object_info[/<node>]``, ``/embeddings``,
``POST /interrupt``, ``/upload/image``. WebSocket ``/ws?clientId=<id>``: ``status`` on connect,
then per prompt ``execution_start``, ``execution_cached``, ``executing`` per node, ``progress``
per sampler step (and binary preview frames with ``previews=True``), ``executed`` for output
nodes, ``execution_success`` (or ``execution_error`` for ``fail_node``, or
``execution_interrupted``), ``executing`` with ``node: null``, and ``status``.

Prompts run one at a time on a worker thread, as in ComfyUI. Clients post first and connect
second, so a prompt waits up to ``ws_wait_s`` for its client's socket before running. Knobs:
``queue_s`` (wait before each prompt runs), ``step_s`` (per sampler step), ``steps`` (when the
sampler node has none), ``latency_s`` (before each HTTP reply).
"""

from __future__ import annotations

import itertools
import json
import queue
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import Emulator, Reply, Request, serve
from ._websocket import WebSocket, WebSocketHandler
from .fal import png

__all__ = ["NODES", "ComfyUIEmulator"]

_SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
_OUTPUTS = {"SaveImage": "output", "PreviewImage": "temp"}


def _node(inputs: dict[str, Any], outputs: list[str], category: str) -> dict[str, Any]:
    return {
        "input": {"required": inputs},
        "output": outputs,
        "output_is_list": [False] * len(outputs),
        "output_name": outputs,
        "category": category,
        "output_node": not outputs,
    }


# A small /object_info: the nodes of ComfyUI's default text-to-image workflow.
NODES: dict[str, dict[str, Any]] = {
    "CheckpointLoaderSimple": _node(
        {"ckpt_name": [["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]]},
        ["MODEL", "CLIP", "VAE"],
        "loaders",
    ),
    "CLIPTextEncode": _node(
        {"text": ["STRING", {"multiline": True}], "clip": ["CLIP"]},
        ["CONDITIONING"],
        "conditioning",
    ),
    "EmptyLatentImage": _node(
        {
            "width": ["INT", {"default": 512, "min": 16, "max": 16384}],
            "height": ["INT", {"default": 512, "min": 16, "max": 16384}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}],
        },
        ["LATENT"],
        "latent",
    ),
    "KSampler": _node(
        {
            "model": ["MODEL"],
            "seed": ["INT", {"default": 0}],
            "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
            "cfg": ["FLOAT", {"default": 8.0}],
            "sampler_name": [["euler", "euler_ancestral", "dpmpp_2m"]],
            "scheduler": [["normal", "karras"]],
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "latent_image": ["LATENT"],
            "denoise": ["FLOAT", {"default": 1.0}],
        },
        ["LATENT"],
        "sampling",
    ),
    "VAEDecode": _node({"samples": ["LATENT"], "vae": ["VAE"]}, ["IMAGE"], "latent"),
    "SaveImage": _node({"images": ["IMAGE"], "filename_prefix": ["STRING"]}, [], "image"),
    "PreviewImage": _node({"images": ["IMAGE"]}, [], "image"),
    "LoadImage": _node({"image": [["example.png"]]}, ["IMAGE", "MASK"], "image"),
}


@dataclass
class _Prompt:
    prompt_id: str
    number: int
    workflow: dict[str, Any]
    client_id: str | None
    extra: dict[str, Any]
    messages: list[list[Any]] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)


class ComfyUIEmulator(Emulator):
    """A ComfyUI server's HTTP and WebSocket APIs (see the module docstring)."""

    name = "comfyui"

    def __init__(
        self,
        *,
        queue_s: float = 0.0,
        step_s: float = 0.0,
        steps: int = 4,
        previews: bool = False,
        ws_wait_s: float = 2.0,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        self.queue_s = queue_s
        self.step_s = step_s
        self.steps = steps
        self.previews = previews
        self.ws_wait_s = ws_wait_s
        self.nodes: dict[str, dict[str, Any]] = dict(NODES)
        self.history: dict[str, dict[str, Any]] = {}
        self._rejections: dict[str, tuple[str, str]] = {}
        self._node_failures: dict[str, tuple[str, str]] = {}
        self._pending: list[_Prompt] = []
        self._running: _Prompt | None = None
        self._sockets: dict[str, WebSocket] = {}
        self._images: dict[str, tuple[int, int]] = {}
        self._work: queue.Queue[_Prompt | None] = queue.Queue()
        self._numbers = itertools.count(1)
        self._state = threading.Condition(threading.RLock())
        self._interrupt = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None

    # -- knobs -----------------------------------------------------------------------------------
    def reject_node(
        self,
        class_type: str,
        message: str = "Value not in list",
        *,
        error_type: str = "value_not_in_list",
    ) -> None:
        """``POST /prompt`` answers 400 ``prompt_outputs_failed_validation`` for these nodes."""
        self._rejections[class_type] = (error_type, message)

    def fail_node(
        self, class_type: str, message: str, *, exception_type: str = "RuntimeError"
    ) -> None:
        """Make nodes of ``class_type`` fail when executed (``execution_error``)."""
        self._node_failures[class_type] = (exception_type, message)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> ComfyUIEmulator:
        """Serve HTTP and ``/ws``, and start the prompt worker."""
        super().start()
        assert self._server is not None
        # Swapped before any client knows the port: every connection gets the WebSocket handler.
        self._server.RequestHandlerClass = type("Handler", (WebSocketHandler,), {"emulator": self})
        self._worker = threading.Thread(target=self._work_loop, name="comfyui-worker", daemon=True)
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop the worker, close the sockets, stop serving."""
        if self._worker is not None:
            with self._state:
                self._stopping.set()
                self._interrupt.set()
                self._state.notify_all()
            self._work.put(None)
            self._worker.join(5)
            self._worker = None
        with self._state:
            sockets = list(self._sockets.values())
        for ws in sockets:
            ws.close()
        super().stop()

    def _connected(self, ws: WebSocket) -> None:
        with self._state:
            self._sockets[ws.client_id] = ws
            self._state.notify_all()
        ws.send_json(self._status_message(ws.client_id))

    def _disconnected(self, ws: WebSocket) -> None:
        with self._state:
            if self._sockets.get(ws.client_id) is ws:
                del self._sockets[ws.client_id]

    # -- HTTP ------------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:
        """Dispatch by method and path."""
        method, path = request.method, request.path
        if method == "POST" and path == "/prompt":
            return self._post_prompt(request.body)
        if method == "GET":
            reply = self._get(path, request.query)
            if reply is not None:
                return reply
        if method == "POST" and path == "/interrupt":
            self._interrupt.set()
            return Reply(body=b"", content_type="text/plain")
        if method == "POST" and path == "/upload/image":
            return Reply(json={"name": "upload.png", "subfolder": "", "type": "input"})
        return super().route(request)

    def _get(self, path: str, query: dict[str, list[str]]) -> Reply | None:
        static: Callable[[], Any] | None = {
            "/prompt": lambda: {"exec_info": {"queue_remaining": self._remaining()}},
            "/queue": self._queue_body,
            "/history": lambda: dict(self.history),
            "/system_stats": lambda: _SYSTEM_STATS,
            "/object_info": lambda: self.nodes,
            "/embeddings": lambda: [],
        }.get(path)
        if static is not None:
            with self._state:
                return Reply(json=static())
        if path.startswith("/history/"):
            prompt_id = path[len("/history/") :]
            with self._state:
                found = self.history.get(prompt_id)
            return Reply(json={} if found is None else {prompt_id: found})
        if path.startswith("/object_info/"):
            name = path[len("/object_info/") :]
            return Reply(json={name: self.nodes[name]} if name in self.nodes else {})
        if path == "/view":
            size = self._images.get(query.get("filename", [""])[0])
            if size is not None:
                return Reply(body=png(*size), content_type="image/png")
            return Reply(404, body=b"", content_type="text/plain")
        return None

    def _queue_body(self) -> dict[str, Any]:
        running = [self._running] if self._running else []
        return {
            "queue_running": [_queue_item(p) for p in running],
            "queue_pending": [_queue_item(p) for p in self._pending],
        }

    def _post_prompt(self, body: bytes) -> Reply:
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return _invalid("invalid_prompt", "Invalid prompt JSON")
        workflow = data.get("prompt") if isinstance(data, dict) else None
        if not isinstance(workflow, dict) or not workflow:
            return _invalid("invalid_prompt", "No prompt provided")
        node_errors: dict[str, Any] = {}
        for node_id, node in workflow.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type not in self.nodes:
                return _invalid(
                    "invalid_prompt", f"Cannot execute because node {class_type} does not exist."
                )
            rejection = self._rejections.get(class_type)
            if rejection is not None:
                node_errors[node_id] = {
                    "errors": [
                        {
                            "type": rejection[0],
                            "message": rejection[1],
                            "details": f"{class_type} input rejected",
                            "extra_info": {},
                        }
                    ],
                    "dependent_outputs": [],
                    "class_type": class_type,
                }
        if node_errors:
            return _invalid(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation", node_errors
            )
        prompt = _Prompt(
            str(uuid.uuid4()),
            next(self._numbers),
            workflow,
            data.get("client_id"),
            data.get("extra_data") or {},
        )
        with self._state:
            self._pending.append(prompt)
        self._work.put(prompt)
        self._broadcast_status()
        return Reply(
            json={"prompt_id": prompt.prompt_id, "number": prompt.number, "node_errors": {}}
        )

    # -- execution -------------------------------------------------------------------------------
    def _remaining(self) -> int:
        with self._state:  # reentrant: also called under the lock
            return len(self._pending) + (1 if self._running else 0)

    def _status_message(self, client_id: str | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": self._remaining()}}}
        if client_id:
            data["sid"] = client_id
        return {"type": "status", "data": data}

    def _broadcast_status(self) -> None:
        with self._state:
            sockets = list(self._sockets.values())
        message = self._status_message()
        for ws in sockets:
            ws.send_json(message)

    def _send(self, prompt: _Prompt, kind: str, data: dict[str, Any], *, log: bool = False) -> None:
        data = {**data, "prompt_id": prompt.prompt_id}
        if log:
            data["timestamp"] = int(time.time() * 1000)
            prompt.messages.append([kind, data])
        with self._state:
            ws = self._sockets.get(prompt.client_id or "")
        if ws is not None:
            ws.send_json({"type": kind, "data": data})

    def _work_loop(self) -> None:
        while True:
            prompt = self._work.get()
            if prompt is None or self._stopping.is_set():
                return
            self._take(prompt)
            if self._stopping.is_set():
                return
            if self.queue_s:
                time.sleep(self.queue_s)
            self._interrupt.clear()
            status = self._execute(prompt)
            with self._state:
                self._running = None
                self.history[prompt.prompt_id] = {
                    "prompt": [
                        prompt.number,
                        prompt.prompt_id,
                        prompt.workflow,
                        prompt.extra,
                        list(prompt.outputs),
                    ],
                    "outputs": prompt.outputs,
                    "status": {
                        "status_str": status,
                        "completed": status == "success",
                        "messages": prompt.messages,
                    },
                    "meta": {
                        node: {"node_id": node, "display_node": node} for node in prompt.outputs
                    },
                }
            self._send(prompt, "executing", {"node": None, "display_node": None})
            self._broadcast_status()

    def _take(self, prompt: _Prompt) -> None:
        """Wait (bounded) for the prompt's client socket, then mark the prompt running."""
        client_id = prompt.client_id
        with self._state:
            self._state.wait_for(
                lambda: not client_id or client_id in self._sockets or self._stopping.is_set(),
                self.ws_wait_s,
            )
            self._pending.remove(prompt)
            self._running = prompt

    def _execute(self, prompt: _Prompt) -> str:
        self._send(prompt, "execution_start", {}, log=True)
        self._send(prompt, "execution_cached", {"nodes": []}, log=True)
        workflow = prompt.workflow
        width, height, batch = _latent_size(workflow)
        executed: list[str] = []
        for node_id, node in workflow.items():
            class_type = node["class_type"]
            self._send(prompt, "executing", {"node": node_id, "display_node": node_id})
            failure = self._node_failures.get(class_type)
            if failure is not None:
                self._send(
                    prompt,
                    "execution_error",
                    _error(node_id, class_type, executed, *failure),
                    log=True,
                )
                return "error"
            if class_type in _SAMPLERS and not self._sample(prompt, node_id, node):
                self._send(
                    prompt,
                    "execution_interrupted",
                    {"node_id": node_id, "node_type": class_type, "executed": executed},
                    log=True,
                )
                return "error"
            kind = _OUTPUTS.get(class_type)
            if kind is not None:
                prefix = node.get("inputs", {}).get("filename_prefix") or "ComfyUI"
                images = []
                for i in range(batch):
                    filename = f"{prefix}_{prompt.number:05d}_{i:02d}_.png"
                    self._images[filename] = (width, height)
                    images.append({"filename": filename, "subfolder": "", "type": kind})
                prompt.outputs[node_id] = {"images": images}
                self._send(
                    prompt,
                    "executed",
                    {"node": node_id, "display_node": node_id, "output": {"images": images}},
                )
            executed.append(node_id)
        self._send(prompt, "execution_success", {}, log=True)
        return "success"

    def _sample(self, prompt: _Prompt, node_id: str, node: dict[str, Any]) -> bool:
        steps = node.get("inputs", {}).get("steps")
        total = steps if isinstance(steps, int) and steps > 0 else self.steps
        with self._state:
            ws = self._sockets.get(prompt.client_id or "")
        for value in range(1, total + 1):
            if self._interrupt.is_set():
                return False
            if self.step_s:
                time.sleep(self.step_s)
            self._send(prompt, "progress", {"value": value, "max": total, "node": node_id})
            if self.previews and ws is not None:
                # Binary frame: event 1 (preview image), format 2 (PNG), then the image.
                ws.send(0x2, struct.pack(">II", 1, 2) + png(8, 8))
        return True


def _latent_size(workflow: dict[str, Any]) -> tuple[int, int, int]:
    for node in workflow.values():
        if isinstance(node, dict) and node.get("class_type") == "EmptyLatentImage":
            inputs = node.get("inputs", {})
            return (
                int(inputs.get("width", 512)),
                int(inputs.get("height", 512)),
                int(inputs.get("batch_size", 1)),
            )
    return 512, 512, 1


def _error(
    node_id: str, class_type: str, executed: list[str], exception_type: str, message: str
) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "node_type": class_type,
        "executed": list(executed),
        "exception_message": message,
        "exception_type": exception_type,
        "traceback": [f"{exception_type}: {message}\n"],
        "current_inputs": {},
        "current_outputs": {},
    }


def _invalid(kind: str, message: str, node_errors: dict[str, Any] | None = None) -> Reply:
    return Reply(
        400,
        json={
            "error": {"type": kind, "message": message, "details": "", "extra_info": {}},
            "node_errors": node_errors or {},
        },
    )


def _queue_item(prompt: _Prompt) -> list[Any]:
    return [prompt.number, prompt.prompt_id, prompt.workflow, prompt.extra, []]


_SYSTEM_STATS = {
    "system": {
        "os": "posix",
        "ram_total": 17179869184,
        "ram_free": 8589934592,
        "comfyui_version": "0.3.40",
        "python_version": "3.11.7",
        "pytorch_version": "2.7.0+cpu",
        "embedded_python": False,
        "argv": ["main.py", "--cpu"],
    },
    "devices": [
        {
            "name": "cpu",
            "type": "cpu",
            "index": None,
            "vram_total": 17179869184,
            "vram_free": 8589934592,
            "torch_vram_total": 0,
            "torch_vram_free": 0,
        }
    ],
}


if __name__ == "__main__":
    serve(ComfyUIEmulator())
