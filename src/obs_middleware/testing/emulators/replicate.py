"""Replicate API emulator: predictions (create, poll, cancel), versions, deployments, SSE streams.

``ReplicateEmulator(models={...})`` serves the models in ``DEFAULT_MODELS`` plus yours
(``"owner/name": ModelSpec(...)``). A prediction is created ``starting`` (also with
``Prefer: wait``, unless ``wait_completes=True``), turns ``processing`` on the first poll and
terminal on the ``polls``-th, with ``created_at``/``started_at``/``completed_at`` that are
``queue_s`` and ``predict_time`` apart and ``metrics.predict_time`` set, as the real API reports
them. ``ModelSpec(fail="…")`` ends ``failed``; ``stream=True`` predictions get ``urls.stream``,
an SSE stream of the output (``error`` event for a failing model). Point the SDK at it with
``replicate.Client(api_token="r8_test", base_url=emu.url)`` and ``client.poll_interval = 0.01``.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from . import Emulator, Reply, Request, serve, sse

__all__ = ["DEFAULT_MODELS", "ModelSpec", "ReplicateEmulator"]


@dataclass
class ModelSpec:
    """How one emulated model behaves. ``output`` entries ``"{url}"`` become emulator URLs."""

    output: Any = field(default_factory=lambda: ["{url}/files/out-0.webp"])
    version: str = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
    iterator: bool = False  # output schema is an iterator (LLMs): run() returns a generator
    fail: str | None = None  # error message: the prediction ends "failed"
    predict_time: float = 1.5
    queue_s: float = 0.25
    metrics: dict[str, Any] = field(default_factory=dict)
    polls: int = 2  # GETs until terminal (the first turns it "processing")


DEFAULT_MODELS: dict[str, ModelSpec] = {
    "black-forest-labs/flux-schnell": ModelSpec(predict_time=0.6),
    "stability-ai/sdxl": ModelSpec(
        version="39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b",
        predict_time=4.2,
        queue_s=1.5,
    ),
    "meta/meta-llama-3-8b-instruct": ModelSpec(
        output=["Hello", " from", " the", " emulator."],
        version="9a9e68fc8695f5847ce944a5cecf9967fd7c64d0fb8c8af1d5bdcc71f03c5e47",
        iterator=True,
        predict_time=0.9,
        metrics={"input_token_count": 12, "output_token_count": 30},
    ),
    "acme/broken": ModelSpec(
        version="0" * 64, fail="CUDA out of memory", predict_time=0.5, queue_s=0.1
    ),
}


def _iso(t: _dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Prediction:
    id: str
    model: str
    spec: ModelSpec
    input: Any
    created: _dt.datetime
    stream: bool
    deployment: str | None = None
    polls: int = 0
    status: str = "starting"


class ReplicateEmulator(Emulator):
    """``/v1/predictions``, ``/v1/models/…/predictions``, ``/v1/deployments/…/predictions``."""

    name = "replicate"

    def __init__(
        self,
        *,
        models: dict[str, ModelSpec] | None = None,
        deployments: dict[str, str] | None = None,
        wait_completes: bool = False,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        self.models = {**DEFAULT_MODELS, **(models or {})}
        self.deployments = deployments or {"acme/flux-prod": "black-forest-labs/flux-schnell"}
        self.wait_completes = wait_completes
        self.predictions: dict[str, _Prediction] = {}
        self._ids = itertools.count(1)
        self._state = threading.Lock()

    # -- routing ---------------------------------------------------------------------------------
    def route(self, request: Request) -> Reply:
        """Dispatch by path."""
        body = request.json if isinstance(request.json, dict) else {}
        reply: Reply | None
        match (request.method, *request.path.strip("/").split("/")):
            case ("POST", "v1", "predictions"):
                reply = self._create_by_version(body, request)
            case ("POST", "v1", "models", owner, name, "predictions"):
                reply = self._create(f"{owner}/{name}", body, request)
            case ("POST", "v1", "deployments", owner, name, "predictions"):
                reply = self._create_for_deployment(f"{owner}/{name}", body, request)
            case ("GET", "v1", "models", owner, name, "versions", version):
                reply = self._version(f"{owner}/{name}", version)
            case ("GET", "v1", "predictions", pid):
                reply = self._poll(pid)
            case ("POST", "v1", "predictions", pid, "cancel"):
                reply = self._cancel(pid)
            case ("GET", "v1", "stream", pid):
                reply = self._stream(pid)
            case ("GET", "files", *_):
                reply = Reply(body=b"RIFF\x00\x00\x00\x00WEBP", content_type="image/webp")
            case _:
                reply = None
        return reply or super().route(request)

    @staticmethod
    def _problem(status: int, title: str, detail: str) -> Reply:
        return Reply(status, json={"title": title, "detail": detail, "status": status})

    # -- predictions -----------------------------------------------------------------------------
    def _create_by_version(self, body: dict[str, Any], request: Request) -> Reply:
        version = str(body.get("version") or "")
        version = version.rpartition(":")[2]
        for name, spec in self.models.items():
            if spec.version == version:
                return self._create(name, body, request)
        return self._problem(422, "Invalid version", f"version {version!r} does not exist")

    def _create_for_deployment(self, deployment: str, body: dict[str, Any], req: Request) -> Reply:
        model = self.deployments.get(deployment)
        if model is None:
            return self._problem(404, "Not found", f"deployment {deployment} does not exist")
        return self._create(model, body, req, deployment)

    def _create(
        self, model: str, body: dict[str, Any], request: Request, deployment: str | None = None
    ) -> Reply:
        spec = self.models.get(model)
        if spec is None:
            return self._problem(404, "Not found", f"model {model} does not exist")
        pid = f"emu{next(self._ids):06d}rpl"
        prediction = _Prediction(
            pid,
            model,
            spec,
            body.get("input"),
            _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0),
            bool(body.get("stream")),
            deployment,
        )
        with self._state:
            self.predictions[pid] = prediction
            if self.wait_completes and "wait" in request.headers.get("prefer", ""):
                prediction.polls = spec.polls
                prediction.status = "failed" if spec.fail else "succeeded"
        return Reply(201, json=self._json(prediction))

    def _poll(self, pid: str) -> Reply:
        with self._state:
            prediction = self.predictions.get(pid)
            if prediction is None:
                return self._problem(404, "Not found", f"prediction {pid} does not exist")
            if prediction.status in ("starting", "processing"):
                prediction.polls += 1
                if prediction.polls >= prediction.spec.polls:
                    prediction.status = "failed" if prediction.spec.fail else "succeeded"
                else:
                    prediction.status = "processing"
        return Reply(json=self._json(prediction))

    def _cancel(self, pid: str) -> Reply:
        with self._state:
            prediction = self.predictions.get(pid)
            if prediction is None:
                return self._problem(404, "Not found", f"prediction {pid} does not exist")
            if prediction.status in ("starting", "processing"):
                prediction.status = "canceled"
        return Reply(json=self._json(prediction))

    def _output(self, spec: ModelSpec) -> Any:
        def fill(value: Any) -> Any:
            if isinstance(value, str):
                return value.replace("{url}", self.url)
            if isinstance(value, list):
                return [fill(v) for v in value]
            if isinstance(value, dict):
                return {k: fill(v) for k, v in value.items()}
            return value

        return fill(spec.output)

    def _json(self, p: _Prediction) -> dict[str, Any]:
        spec = p.spec
        started = p.created + _dt.timedelta(seconds=spec.queue_s)
        completed = started + _dt.timedelta(seconds=spec.predict_time)
        running = p.status != "starting"
        done = p.status in ("succeeded", "failed", "canceled")
        urls = {
            "get": f"{self.url}/v1/predictions/{p.id}",
            "cancel": f"{self.url}/v1/predictions/{p.id}/cancel",
            "web": f"{self.url}/p/{p.id}",
        }
        if p.stream:
            urls["stream"] = f"{self.url}/v1/stream/{p.id}"
        return {
            "id": p.id,
            "model": p.model,
            "version": spec.version,
            "deployment": p.deployment,
            "status": p.status,
            "input": p.input,
            "output": self._output(spec) if p.status == "succeeded" else None,
            "logs": "" if not running else "50%|█████     | 2/4 [00:00<00:00]\n",
            "error": spec.fail if p.status == "failed" else None,
            "metrics": {
                "predict_time": spec.predict_time,
                "total_time": spec.queue_s + spec.predict_time,
                **spec.metrics,
            }
            if done
            else {},
            "created_at": _iso(p.created),
            "started_at": _iso(started) if running else None,
            "completed_at": _iso(completed) if done else None,
            "urls": urls,
            "source": "api",
            "data_removed": False,
        }

    def _version(self, model: str, version: str) -> Reply:
        spec = self.models.get(model)
        if spec is None or spec.version != version:
            return self._problem(404, "Not found", f"version {model}:{version} does not exist")
        output: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
        if spec.iterator:
            output["x-cog-array-type"] = "iterator"
        return Reply(
            json={
                "id": version,
                "created_at": "2025-01-01T00:00:00.000000Z",
                "cog_version": "0.13.0",
                "openapi_schema": {"components": {"schemas": {"Output": output}}},
            }
        )

    # -- streams and files -----------------------------------------------------------------------
    def _stream(self, pid: str) -> Reply:
        prediction = self.predictions.get(pid)
        if prediction is None:
            return self._problem(404, "Not found", f"prediction {pid} does not exist")
        return Reply(events=self._events(prediction))

    def _events(self, p: _Prediction) -> Iterator[bytes]:
        n = itertools.count(1)
        if p.spec.fail:
            with self._state:
                p.status = "failed"
            yield sse({"detail": p.spec.fail}, event="error", id=str(next(n)))
            return
        output = self._output(p.spec)
        for item in output if isinstance(output, list) else [output]:
            yield sse(str(item), event="output", id=str(next(n)))
        with self._state:
            p.status = "succeeded"
        yield sse("{}", event="done", id=str(next(n)))


if __name__ == "__main__":
    serve(ReplicateEmulator())
