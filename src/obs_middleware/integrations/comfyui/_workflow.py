"""What one ComfyUI prompt looks like: its workflow, checkpoint, latent size, prompt text."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._ai import AICall

__all__ = ["latent", "model", "record_workflow", "workflow"]

_SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced"})
_LOADERS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name"}
_SAMPLER_PARAMS = ("seed", "noise_seed", "steps", "cfg", "sampler_name", "scheduler", "denoise")


def workflow(body: Any) -> dict[str, Any] | None:
    """Return the workflow of a ``POST /prompt`` body, or None if it is not one."""
    if isinstance(body, (bytes, bytearray, str)):
        if not body or body[:1] not in (b"{", "{"):
            return None
        body = json.loads(body)
    if not isinstance(body, dict):
        return None
    workflow = body.get("prompt")
    return workflow if isinstance(workflow, dict) else None


def _nodes_of(workflow: dict[str, Any], class_types: Any) -> list[dict[str, Any]]:
    return [
        n
        for n in workflow.values()
        if isinstance(n, dict)
        and n.get("class_type") in class_types
        and isinstance(n.get("inputs"), dict)
    ]


def model(workflow: dict[str, Any]) -> str | None:
    for node in _nodes_of(workflow, _LOADERS):
        name = node["inputs"].get(_LOADERS[node["class_type"]])
        if isinstance(name, str):
            return name
    return None


def latent(workflow: dict[str, Any]) -> tuple[int | None, int | None]:
    for node in _nodes_of(workflow, ("EmptyLatentImage", "EmptySD3LatentImage")):
        width, height = node["inputs"].get("width"), node["inputs"].get("height")
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return None, None


def record_workflow(call: AICall, workflow: dict[str, Any]) -> None:
    """Model, positive prompt and sampler settings as sanitized inputs."""
    call.set_model(model(workflow))
    params: dict[str, Any] = {"nodes": len(workflow)}
    prompt = None
    for sampler in _nodes_of(workflow, _SAMPLERS):
        inputs = sampler["inputs"]
        params.update((k, inputs[k]) for k in _SAMPLER_PARAMS if k in inputs)
        positive = inputs.get("positive")
        if isinstance(positive, list) and positive:
            source = workflow.get(str(positive[0]))
            text = source.get("inputs", {}).get("text") if isinstance(source, dict) else None
            prompt = text if isinstance(text, str) else None
        break
    if prompt is None:
        for node in _nodes_of(workflow, ("CLIPTextEncode",)):
            if isinstance(node["inputs"].get("text"), str):
                prompt = node["inputs"]["text"]
                break
    width, height = latent(workflow)
    if width and height:
        params["width"], params["height"] = width, height
    call.set_inputs(prompt, params)
    call.set_image_params(
        width=width,
        height=height,
        steps=params.get("steps"),
        seed=params.get("seed", params.get("noise_seed")),
        sampler=params.get("sampler_name"),
        guidance=params.get("cfg"),
    )
