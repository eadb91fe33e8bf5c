"""The demo's AI providers: the real SDKs against local emulators, or a skip when one is missing.

Each provider starts its emulator (``obs_middleware.testing.emulators``) and a client of the real
SDK pointed at it; a provider whose emulator or SDK cannot be imported is skipped with the reason
(``obs demo`` prints it) and its routes answer without a provider call. Failures are scripted on
the emulators at a fixed rate, so some calls fail the way the real APIs do.
"""

from __future__ import annotations

import contextlib
import importlib
import random
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["IMAGE_MODELS", "ProviderError", "Providers"]

# Demo model name -> (provider, the provider's model id).
IMAGE_MODELS: dict[str, tuple[str, str]] = {
    "sdxl": ("replicate", "stability-ai/sdxl"),
    "flux-dev": ("replicate", "black-forest-labs/flux-dev"),
    "flux-schnell": ("fal", "fal-ai/flux/schnell"),
    "gpt-image-1": ("openai", "gpt-image-1"),
}
# The emulators accept any credentials; these only have the shape the SDKs expect.
_OPENAI_KEY = "sk-demo-0000000000000000000000"
_REPLICATE_TOKEN = "r8_demo"


def _upscale_workflow(job_id: int, missing_node: bool) -> dict[str, Any]:
    """Build ComfyUI's default graph (API format) as a 2x upscale pass.

    ``missing_node`` adds a node the server does not have: it rejects the prompt.
    """
    workflow: dict[str, Any] = {
        "3": {"class_type": "KSampler", "inputs": {
            "seed": job_id, "steps": 6, "cfg": 6.5, "sampler_name": "dpmpp_2m",
            "scheduler": "karras", "denoise": 0.35, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 2048, "height": 2048, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode",
              "inputs": {"text": "sharp details, high resolution", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage",
              "inputs": {"filename_prefix": f"upscaled-{job_id}", "images": ["8", 0]}},
    }  # fmt: skip
    if missing_node:
        workflow["10"] = {
            "class_type": "UpscaleModelLoader",
            "inputs": {"model_name": "4x-UltraSharp.pth"},
        }
    for node in workflow.values():  # clients find nodes by title, as in exported workflows
        node["_meta"] = {"title": "Save Image" if node["class_type"] == "SaveImage" else ""}
    return workflow


class ProviderError(Exception):
    """A provider call failed; the route answers 502."""


class Providers:
    """Emulators and SDK clients for one demo run; ``skipped`` says what is missing and why."""

    def __init__(self, rng: random.Random, failure_rate: float = 0.04) -> None:
        self.rng = rng
        self.failure_rate = failure_rate
        self.clients: dict[str, Any] = {}
        self.emulators: dict[str, Any] = {}
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()

    def start(self) -> None:
        """Start every provider that can start; record the others in ``skipped``."""
        setups: dict[str, Callable[[], tuple[Any, Any]]] = {
            "openai": self._openai,
            "replicate": self._replicate,
            "fal": self._fal,
            "comfyui": self._comfyui,
        }
        for name, setup in setups.items():
            try:
                emulator, client = setup()
            except ImportError as exc:
                self.skipped[name] = (
                    f"{exc.name or exc} is not installed (pip install 'obs-middleware[demo]')"
                )
                continue
            self.emulators[name] = emulator
            self.clients[name] = client

    def close(self) -> None:
        """Stop the emulators."""
        self._stack.close()

    def _unlucky(self) -> bool:
        with self._lock:
            return self.rng.random() < self.failure_rate

    def _emulator(self, name: str, factory: str, **knobs: Any) -> Any:
        module = importlib.import_module(f"obs_middleware.testing.emulators.{name}")
        return self._stack.enter_context(getattr(module, factory)(**knobs))

    # -- setups ----------------------------------------------------------------------------------
    def _openai(self) -> tuple[Any, Any]:
        openai = importlib.import_module("openai")
        emulator = self._emulator(
            "openai",
            "OpenAIEmulator",
            latency_s=0.004,
            prompt_tokens=1200,
            cached_tokens=400,
            completion_tokens=350,
            reply="A lighthouse on a cliff at dusk, painted in thick oils.",
        )
        client = openai.OpenAI(
            api_key=_OPENAI_KEY, base_url=emulator.url + "/v1", max_retries=0, timeout=10
        )
        return emulator, client

    def _replicate(self) -> tuple[Any, Any]:
        replicate = importlib.import_module("replicate")
        spec = importlib.import_module("obs_middleware.testing.emulators.replicate").ModelSpec
        emulator = self._emulator(
            "replicate",
            "ReplicateEmulator",
            models={"black-forest-labs/flux-dev": spec(predict_time=2.1, queue_s=0.4)},
        )
        client = replicate.Client(api_token=_REPLICATE_TOKEN, base_url=emulator.url)
        client.poll_interval = 0.01
        return emulator, client

    def _fal(self) -> tuple[Any, Any]:
        fal_client = importlib.import_module("fal_client")
        emulator = self._emulator("fal", "FalEmulator", queue_s=0.01, run_s=0.02)
        self._stack.enter_context(emulator.use())  # fal_client's URLs point here until close()
        return emulator, fal_client

    def _comfyui(self) -> tuple[Any, Any]:
        wrapper = importlib.import_module("comfy_api_simplified").ComfyApiWrapper
        emulator = self._emulator("comfyui", "ComfyUIEmulator", step_s=0.003, ws_wait_s=5.0)
        return emulator, wrapper(emulator.url)

    # -- calls -----------------------------------------------------------------------------------
    def chat(self, model: str, prompt: str) -> tuple[str, int, int]:
        """Run a chat completion: (text, input tokens, output tokens)."""
        client = self.clients.get("openai")
        if client is None:
            return "(openai skipped)", 0, 0
        if self._unlucky():
            self.emulators["openai"].fail("/chat/completions", 500, {"error": {"message": "busy"}})
        try:
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}], max_tokens=400
            )
        except Exception as exc:
            raise ProviderError(f"openai: {type(exc).__name__}") from exc
        usage = reply.usage
        return reply.choices[0].message.content or "", usage.prompt_tokens, usage.completion_tokens

    def image(self, model: str, prompt: str) -> str | None:
        """Generate one image with ``model`` (a key of ``IMAGE_MODELS``); returns its URL."""
        provider, model_id = IMAGE_MODELS[model]
        client = self.clients.get(provider)
        if client is None:
            return None
        emulator = self.emulators[provider]
        try:
            if provider == "replicate":
                if self._unlucky():
                    emulator.fail("/predictions", 500, {"detail": "prediction failed to start"})
                output = client.run(model_id, input={"prompt": prompt, "width": 1024})
                return str(output[0])
            if provider == "fal":
                if self._unlucky():
                    emulator.fail("/fal-ai/flux", 500, {"detail": "worker crashed"})
                result = client.subscribe(
                    model_id, {"prompt": prompt, "image_size": "square_hd", "num_images": 1}
                )
                return str(result["images"][0]["url"])
            if self._unlucky():
                emulator.fail("/images/generations", 500, {"error": {"message": "overloaded"}})
            result = client.images.generate(model=model_id, prompt=prompt, size="1024x1024")
            return "data:image/png;base64," + (result.data[0].b64_json or "")[:16]
        except Exception as exc:
            raise ProviderError(f"{provider}: {type(exc).__name__}") from exc

    def workflow(self, job_id: int) -> None:
        """Run the upscale workflow of one job on ComfyUI (nothing when ComfyUI is skipped)."""
        client = self.clients.get("comfyui")
        if client is None:
            return
        workflow = _upscale_workflow(job_id, missing_node=self._unlucky())
        try:
            client.queue_and_wait_images(workflow, "Save Image")
        except Exception as exc:
            raise ProviderError(f"comfyui: {type(exc).__name__}") from exc
