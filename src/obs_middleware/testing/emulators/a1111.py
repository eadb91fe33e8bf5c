"""AUTOMATIC1111 (stable-diffusion-webui) API emulator: txt2img, img2img, extra-single-image.

``A1111Emulator()`` answers ``/sdapi/v1/…`` as the webui's FastAPI app does: ``txt2img`` and
``img2img`` return ``{"images": [<base64 PNG>…], "parameters": <the request>, "info": <a JSON
string>}`` whose ``info`` carries the seed it used (a request's ``-1`` becomes ``seed``, then one
more per image), steps, sampler, size and the checkpoint (``sd_model_name``: the request's
``override_settings.sd_model_checkpoint``, else ``model``); ``extra-single-image`` returns
``{"html_info", "image"}`` with the input PNG's size times ``upscaling_resize``. Images are
solid-colour PNGs of the requested size (``batch_size * n_iter`` of them, no grid), so a client
that decodes them (``webuiapi`` opens each with Pillow) sees the real dimensions. A validation
error is a 422 with FastAPI's ``{"detail": [...]}``. Point the client at it with
``webuiapi.WebUIApi(baseurl=emu.url + "/sdapi/v1")``.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from typing import Any

from . import Emulator, Reply, Request, serve
from .fal import png

__all__ = ["A1111Emulator"]

_MAX_SIDE = 4096


def _png_size(b64: str) -> tuple[int, int] | None:
    """``(width, height)`` of a base64 PNG (with or without a ``data:`` prefix)."""
    try:
        raw = base64.b64decode(b64.partition(",")[2] if b64.startswith("data:") else b64)
    except (binascii.Error, ValueError):
        return None
    if raw[:8] != b"\x89PNG\r\n\x1a\n" or len(raw) < 24:
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return int(width), int(height)


def _side(value: Any, default: int) -> int:
    return value if isinstance(value, int) and 0 < value <= _MAX_SIDE else default


class A1111Emulator(Emulator):
    """``/sdapi/v1/``: txt2img, img2img, extra-single-image and the lookups a client makes."""

    name = "a1111"

    def __init__(
        self,
        *,
        model: str = "v1-5-pruned-emaonly",
        seed: int = 1234567890,
        version: str = "v1.10.1",
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        self.model = model
        self.seed = seed
        self.version = version

    def route(self, request: Request) -> Reply:
        """Dispatch by path."""
        body = request.json if isinstance(request.json, dict) else None
        reply: Reply | None = None
        match (request.method, request.path.rstrip("/").removeprefix("/sdapi/v1/")):
            case ("POST", "txt2img" | "img2img" as kind):
                reply = self._generate(kind, body) if body is not None else None
            case ("POST", "extra-single-image"):
                reply = self._upscale(body) if body is not None else None
            case ("GET", "scripts"):
                reply = Reply(json={"txt2img": ["prompt matrix", "x/y/z plot"], "img2img": []})
            case ("GET", "sd-models"):
                title = f"{self.model}.safetensors"
                reply = Reply(json=[{"title": title, "model_name": self.model}])
            case ("GET", "samplers"):
                names = ("Euler a", "Euler", "DPM++ 2M", "DDIM")
                reply = Reply(json=[{"name": n, "aliases": [], "options": {}} for n in names])
            case ("GET", "options"):
                reply = Reply(json={"sd_model_checkpoint": f"{self.model}.safetensors"})
            case _:
                return super().route(request)
        return reply or self._invalid(["body"], "Field required")

    @staticmethod
    def _invalid(loc: list[Any], msg: str) -> Reply:
        return Reply(422, json={"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]})

    def _checkpoint(self, body: dict[str, Any]) -> str:
        overrides = body.get("override_settings")
        wanted = overrides.get("sd_model_checkpoint") if isinstance(overrides, dict) else None
        name = wanted if isinstance(wanted, str) and wanted else self.model
        return name.rsplit(".", 1)[0] if name.endswith((".safetensors", ".ckpt")) else name

    def _generate(self, kind: str, body: dict[str, Any]) -> Reply:
        steps = body.get("steps", 20)
        if not isinstance(steps, int) or steps < 1:
            return self._invalid(["body", "steps"], "steps must be a positive integer")
        if kind == "img2img" and not body.get("init_images"):
            return self._invalid(["body", "init_images"], "init_images is required")
        width, height = _side(body.get("width"), 512), _side(body.get("height"), 512)
        batch = max(int(body.get("batch_size") or 1), 1)
        count = batch * max(int(body.get("n_iter") or 1), 1)
        seed = body.get("seed", -1)
        first = seed if isinstance(seed, int) and seed >= 0 else self.seed
        seeds = [first + i for i in range(count)]
        sampler = body.get("sampler_name") or body.get("sampler_index") or "Euler a"
        prompt = str(body.get("prompt") or "")
        model = self._checkpoint(body)
        infotexts = [
            f"{prompt}\nSteps: {steps}, Sampler: {sampler}, CFG scale: {body.get('cfg_scale', 7)},"
            f" Seed: {s}, Size: {width}x{height}, Model: {model}, Version: {self.version}"
            for s in seeds
        ]
        info = {
            "prompt": prompt,
            "all_prompts": [prompt] * count,
            "negative_prompt": str(body.get("negative_prompt") or ""),
            "seed": first,
            "all_seeds": seeds,
            "subseed": first + 1,
            "all_subseeds": [s + 1 for s in seeds],
            "subseed_strength": body.get("subseed_strength", 0),
            "width": width,
            "height": height,
            "sampler_name": sampler,
            "cfg_scale": body.get("cfg_scale", 7.0),
            "steps": steps,
            "batch_size": batch,
            "restore_faces": bool(body.get("restore_faces")),
            "sd_model_name": model,
            "sd_model_hash": f"{zlib.crc32(model.encode()):010x}"[:10],
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": body.get("denoising_strength"),
            "extra_generation_params": {"Schedule type": body.get("scheduler") or "Automatic"},
            "index_of_first_image": 0,
            "infotexts": infotexts,
            "styles": body.get("styles") or [],
            "job_timestamp": "20260101120000",
            "clip_skip": 1,
            "is_using_inpainting_conditioning": False,
            "version": self.version,
        }
        image = base64.b64encode(png(width, height)).decode()
        parameters = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return Reply(
            json={"images": [image] * count, "parameters": parameters, "info": json.dumps(info)}
        )

    def _upscale(self, body: dict[str, Any]) -> Reply:
        image = body.get("image")
        size = _png_size(image) if isinstance(image, str) else None
        if size is None:
            return self._invalid(["body", "image"], "image is not a base64 PNG")
        factor = body.get("upscaling_resize", 2)
        if not isinstance(factor, (int, float)) or not 0 < factor <= 8:
            return self._invalid(["body", "upscaling_resize"], "upscaling_resize out of range")
        width = min(round(size[0] * factor), _MAX_SIDE)
        height = min(round(size[1] * factor), _MAX_SIDE)
        upscaler = body.get("upscaler_1") or "None"
        return Reply(
            json={
                "html_info": f"<p>Postprocess upscale by: {factor}, upscaler: {upscaler}</p>",
                "image": base64.b64encode(png(width, height)).decode(),
            }
        )


if __name__ == "__main__":
    serve(A1111Emulator())
