"""OpenAI API emulator: chat completions, responses, images and embeddings, JSON and SSE.

``OpenAIEmulator(prompt_tokens=20, completion_tokens=10, cached_tokens=0, reasoning_tokens=0,
reply="Hello from the emulator.")``: every call reports this usage, so costs are predictable.
A token knob may be any JSON value (``10**400``, ``-5``, ``"12"``, ``None``): a hostile provider's
usage, reported as is (``total_tokens`` is then the prompt value).
Streams send one chunk per word and, with ``stream_options={"include_usage": True}``, a final
usage chunk (chat) or the usage in ``response.completed`` (responses). Models in ``snapshots``
answer with their dated snapshot name, as the real API does. ``first_chunk_delay_s``: a stream's
headers go out at once, its first chunk that much later (time to first token, scripted; the base
``stream_delay_s`` then spaces every chunk). Every reply carries
``x-request-id: req_emu_<n>``. Errors: ``emu.fail("/chat/completions", 400, error_body(...))``.
"""

from __future__ import annotations

import base64
import itertools
import struct
import time
from collections.abc import Iterator
from typing import Any

from . import Emulator, Reply, Request, serve, sse

__all__ = ["OpenAIEmulator", "error_body"]

SNAPSHOTS = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
# A 1x1 PNG for b64_json image replies.
_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
    )
).decode()


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None) -> Any:
    """Build an OpenAI error payload (``code="content_policy_violation"``: a moderation refusal)."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


class OpenAIEmulator(Emulator):
    """``/v1/chat/completions``, ``/v1/responses``, ``/v1/images/*``, ``/v1/embeddings``."""

    name = "openai"

    def __init__(
        self,
        *,
        prompt_tokens: Any = 20,
        completion_tokens: Any = 10,
        cached_tokens: Any = 0,
        reasoning_tokens: Any = 0,
        reply: str = "Hello from the emulator.",
        snapshots: dict[str, str] | None = None,
        first_chunk_delay_s: float = 0.0,
        **knobs: Any,
    ) -> None:
        super().__init__(**knobs)
        self.first_chunk_delay_s = first_chunk_delay_s
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cached_tokens = cached_tokens
        self.reasoning_tokens = reasoning_tokens
        self.reply = reply
        self.snapshots = SNAPSHOTS if snapshots is None else snapshots
        self._ids = itertools.count(1)

    def handle(self, request: Request) -> Reply:
        """Every reply carries a request id, errors included."""
        reply = super().handle(request)
        reply.headers.setdefault("x-request-id", f"req_emu_{next(self._ids)}")
        reply.headers.setdefault("openai-processing-ms", "1")
        return reply

    def route(self, request: Request) -> Reply:
        """Dispatch by path."""
        body = request.json if isinstance(request.json, dict) else {}
        path = request.path.removeprefix("/v1")
        if request.method == "POST" and path == "/chat/completions":
            return self._chat(body)
        if request.method == "POST" and path == "/responses":
            return self._responses(body)
        if request.method == "POST" and path in (
            "/images/generations",
            "/images/edits",
            "/images/variations",
        ):
            return self._images(body)
        if request.method == "POST" and path == "/embeddings":
            return self._embeddings(body)
        return super().route(request)

    # -- chat ------------------------------------------------------------------------------------
    def _model(self, body: dict[str, Any]) -> str:
        model = str(body.get("model") or "gpt-4o-mini")
        return self.snapshots.get(model, model)

    def _total(self) -> Any:
        counts = (self.prompt_tokens, self.completion_tokens)
        if all(type(n) is int for n in counts):
            return sum(counts)
        return self.prompt_tokens

    def _chat_usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self._total(),
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }

    def _chat(self, body: dict[str, Any]) -> Reply:
        model = self._model(body)
        cid = f"chatcmpl-emu{next(self._ids)}"
        if body.get("stream"):
            options = body.get("stream_options") or {}
            return Reply(events=self._chat_stream(cid, model, bool(options.get("include_usage"))))
        n = int(body.get("n") or 1)
        return Reply(
            json={
                "id": cid,
                "object": "chat.completion",
                "created": 1_767_225_600,
                "model": model,
                "system_fingerprint": "fp_emu",
                "service_tier": "default",
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": self.reply, "refusal": None},
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                    for i in range(n)
                ],
                "usage": self._chat_usage(),
            }
        )

    def _first_chunk_wait(self) -> None:
        # Runs on the first next() of a stream's events: after its headers have been sent.
        if self.first_chunk_delay_s:
            time.sleep(self.first_chunk_delay_s)

    def _chat_stream(self, cid: str, model: str, include_usage: bool) -> Iterator[bytes]:
        self._first_chunk_wait()

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": 1_767_225_600,
                "model": model,
                "system_fingerprint": "fp_emu",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **({"usage": None} if include_usage else {}),
            }

        yield sse(chunk({"role": "assistant", "content": ""}))
        for i, word in enumerate(self.reply.split(" ")):
            yield sse(chunk({"content": word if i == 0 else " " + word}))
        yield sse(chunk({}, "stop"))
        if include_usage:
            final = chunk({})
            final["choices"] = []
            final["usage"] = self._chat_usage()
            yield sse(final)
        yield sse("[DONE]")

    # -- responses -------------------------------------------------------------------------------
    def _response(self, rid: str, model: str, status: str, text: str | None) -> dict[str, Any]:
        done = status == "completed"
        return {
            "id": rid,
            "object": "response",
            "created_at": 1_767_225_600,
            "status": status,
            "model": model,
            "output": [self._message(rid, text)] if done else [],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": self.prompt_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": self.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                "total_tokens": self._total(),
            }
            if done
            else None,
        }

    @staticmethod
    def _message(rid: str, text: str | None) -> dict[str, Any]:
        content = [] if text is None else [{"type": "output_text", "text": text, "annotations": []}]
        return {
            "type": "message",
            "id": f"msg_{rid}",
            "status": "completed" if text is not None else "in_progress",
            "role": "assistant",
            "content": content,
        }

    def _responses(self, body: dict[str, Any]) -> Reply:
        model = self._model(body)
        rid = f"resp_emu{next(self._ids)}"
        if body.get("stream"):
            return Reply(events=self._responses_stream(rid, model))
        return Reply(json=self._response(rid, model, "completed", self.reply))

    def _responses_stream(self, rid: str, model: str) -> Iterator[bytes]:
        self._first_chunk_wait()
        seq = itertools.count()
        part = {"type": "output_text", "text": "", "annotations": []}
        item_id = f"msg_{rid}"
        events: list[dict[str, Any]] = [
            {
                "type": "response.created",
                "response": self._response(rid, model, "in_progress", None),
            },
            {
                "type": "response.in_progress",
                "response": self._response(rid, model, "in_progress", None),
            },
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": self._message(rid, None),
            },
            {
                "type": "response.content_part.added",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": part,
            },
        ]
        for i, word in enumerate(self.reply.split(" ")):
            events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": item_id,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": word if i == 0 else " " + word,
                    "logprobs": [],
                }
            )
        events += [
            {
                "type": "response.output_text.done",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "text": self.reply,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "item_id": item_id,
                "output_index": 0,
                "content_index": 0,
                "part": {**part, "text": self.reply},
            },
            {
                "type": "response.output_item.done",
                "output_index": 0,
                "item": self._message(rid, self.reply),
            },
            {
                "type": "response.completed",
                "response": self._response(rid, model, "completed", self.reply),
            },
        ]
        for event in events:
            event["sequence_number"] = next(seq)
            yield sse(event, event=event["type"])

    # -- images and embeddings -------------------------------------------------------------------
    def _images(self, body: dict[str, Any]) -> Reply:
        model = str(body.get("model") or "dall-e-2")
        n = int(body.get("n") or 1)
        size = str(body.get("size") or "1024x1024")
        if body.get("response_format") == "b64_json" or model.startswith("gpt-image"):
            data = [{"b64_json": _PNG} for _ in range(n)]
        else:
            data = [{"url": f"{self.url}/files/img-{next(self._ids)}.png"} for _ in range(n)]
        if model == "dall-e-3":  # it rewrites every prompt, and says so
            prompt = str(body.get("prompt") or "")
            for item in data:
                item["revised_prompt"] = f"A photorealistic image of {prompt}."
        reply: dict[str, Any] = {"created": 1_767_225_600, "data": data}
        if model.startswith("gpt-image"):
            reply.update(
                size=size,
                quality=body.get("quality") or "high",
                output_format="png",
                usage={
                    "input_tokens": self.prompt_tokens,
                    "output_tokens": self.completion_tokens,
                    "total_tokens": self._total(),
                    "input_tokens_details": {"text_tokens": self.prompt_tokens, "image_tokens": 0},
                },
            )
        return Reply(json=reply)

    def _embeddings(self, body: dict[str, Any]) -> Reply:
        inputs = body.get("input")
        count = (
            len(inputs)
            if isinstance(inputs, list) and inputs and isinstance(inputs[0], (str, list))
            else 1
        )
        vector = [0.1, 0.2, 0.3]
        as_b64 = body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": base64.b64encode(struct.pack("<3f", *vector)).decode()
                if as_b64
                else vector,
            }
            for i in range(count)
        ]
        return Reply(
            json={
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "text-embedding-3-small"),
                "usage": {"prompt_tokens": self.prompt_tokens, "total_tokens": self.prompt_tokens},
            }
        )


if __name__ == "__main__":
    serve(OpenAIEmulator())
