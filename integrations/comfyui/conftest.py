"""The ComfyUI emulator (HTTP + ``/ws``), a text-to-image workflow, and the patch."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from obs_middleware.integrations import comfyui as obs_comfyui
from obs_middleware.testing.emulators.comfyui import ComfyUIEmulator

# ComfyUI's default text-to-image workflow in API format, as clients export it.
WORKFLOW: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 42,
            "steps": 4,
            "cfg": 7.0,
            "sampler_name": "euler",
            "scheduler": "normal",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
        "_meta": {"title": "KSampler"},
    },
    "4": {
        "class_type": "CheckpointLoaderSimple",
        "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
        "_meta": {"title": "Load Checkpoint"},
    },
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": 1024, "height": 768, "batch_size": 2},
        "_meta": {"title": "Empty Latent Image"},
    },
    "6": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "a red fox in the snow", "clip": ["4", 1]},
        "_meta": {"title": "Positive"},
    },
    "7": {
        "class_type": "CLIPTextEncode",
        "inputs": {"text": "blurry", "clip": ["4", 1]},
        "_meta": {"title": "Negative"},
    },
    "8": {
        "class_type": "VAEDecode",
        "inputs": {"samples": ["3", 0], "vae": ["4", 2]},
        "_meta": {"title": "VAE Decode"},
    },
    "9": {
        "class_type": "SaveImage",
        "inputs": {"filename_prefix": "fox", "images": ["8", 0]},
        "_meta": {"title": "Save Image"},
    },
}


@pytest.fixture
def workflow() -> dict[str, Any]:
    return copy.deepcopy(WORKFLOW)


@pytest.fixture
def emu() -> Iterator[ComfyUIEmulator]:
    with ComfyUIEmulator(step_s=0.001) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def patched() -> Iterator[None]:
    obs_comfyui.patch()
    yield
    obs_comfyui.unpatch()
