"""Replicate: one ``ai.request`` span per ``run``, ``stream`` or prediction call, with its id.

Patches ``Client.run``/``async_run``/``stream``/``async_stream`` and the prediction entry
points they call (``predictions.create``, ``models.predictions.create``, deployments'
``predictions.create``, ``Prediction.wait``; sync and async). A ``run()`` is one span: the inner
``create`` and ``wait`` join it and give it the prediction id (``ai.request_id``), the model
that ran (``ai.response_model``; ``ai.model`` stays the model or deployment called) and
version, status, queue time (``started_at - created_at``: ``ai.queue_ms``),
``metrics.predict_time`` (``ai.gpu_seconds``, and as run time ``ai.run_ms``), token counts of
language models and the number of output files. The module aliases (``replicate.run``…), bound
to the default client at import, are re-bound so they go through the patch; names imported from
``replicate`` before ``patch()`` are not.

Cost: per output image, per token, or ``predict_time`` x the hardware's price, as the pricing
table says for the model (Replicate does not report which hardware ran a prediction). Streams
end their span when exhausted, closed or collected; their predict time is not known.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Mapping
from typing import Any

from .._core.patches import Patches
from ._ai import AICall, ai_call, safe
from ._registry import lookup

__all__ = ["patch", "supported", "unpatch"]

supported = lookup("replicate").requirement

_patches = Patches("replicate")
_ALIASES = ("run", "async_run", "stream", "async_stream")
_FAILED = {"failed": "error", "canceled": "cancelled"}


# -- extractors ----------------------------------------------------------------------------------
def _ref(ref: Any) -> tuple[str | None, str | None]:
    """``(model, version)`` from a run/stream reference (``"o/n:v"``, Model, Version…)."""
    if isinstance(ref, str):
        model, _, version = ref.partition(":")
        if "/" not in model:  # a bare version id
            return None, model or None
        return model, version or None
    if isinstance(ref, tuple) and len(ref) == 2:
        return f"{ref[0]}/{ref[1]}", None
    owner, name = getattr(ref, "owner", None), getattr(ref, "name", None)
    if owner and name:
        return f"{owner}/{name}", None
    version_id = getattr(ref, "id", None)
    return None, version_id if isinstance(version_id, str) else None


def _inputs(call: AICall, value: Any) -> None:
    if isinstance(value, Mapping):
        call.set_inputs(params=value)
        call.set_image_params_from(value)
        width, height = value.get("width"), value.get("height")
        if isinstance(width, int) and isinstance(height, int):
            call.set_images(None, width=width, height=height)


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    head, dot, rest = text.partition(".")
    if dot:  # Python 3.10 takes at most 6 fractional digits
        digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
        text = f"{head}.{digits[:6]}{rest[len(digits) :]}"
    return _dt.datetime.fromisoformat(text).timestamp()


def _is_file(item: Any) -> bool:
    if isinstance(item, str):
        return item.startswith(("https://", "http://", "data:"))
    return type(item).__name__ == "FileOutput"


def _output_files(output: Any) -> int | None:
    items = output if isinstance(output, list) else [output]
    files = sum(1 for item in items if _is_file(item))
    return files or None


def _from_prediction(call: AICall, prediction: Any) -> None:
    """Everything a prediction says about its call: id, model, timings, usage, outcome."""
    if prediction is None:
        return
    call.set_request_id(getattr(prediction, "id", None))
    call.set_model(None, version=getattr(prediction, "version", None))
    # What ran (a deployment's model): the call stays grouped under the name it was made with.
    call.set_response_model(getattr(prediction, "model", None))
    status = getattr(prediction, "status", None)
    call.attrs["ai.prediction_status"] = status
    created = _timestamp(getattr(prediction, "created_at", None))
    started = _timestamp(getattr(prediction, "started_at", None))
    if created is not None and started is not None:
        call.set_queue_ms((started - created) * 1000)
    metrics = getattr(prediction, "metrics", None) or {}
    predict_time = metrics.get("predict_time")
    if isinstance(predict_time, (int, float)):
        call.set_compute(predict_time)
        call.set_run_ms(predict_time * 1000)
    tokens_in, tokens_out = metrics.get("input_token_count"), metrics.get("output_token_count")
    if isinstance(tokens_in, int) or isinstance(tokens_out, int):
        call.set_tokens(input=tokens_in, output=tokens_out)
    if status == "succeeded":
        files = _output_files(getattr(prediction, "output", None))
        if files is not None:
            call.set_images(files)
    elif status in _FAILED:
        error = getattr(prediction, "error", None)
        call.set_status(
            _FAILED[status],
            error_type="ModelError" if status == "failed" else None,
            message=str(error) if error else None,
        )
        if error and "NSFW" in str(error).upper():  # the model's safety checker refused
            call.set_content_safety(True, categories=("nsfw",))
            call.span.status = "content_violation"


def _error(call: AICall, exc: BaseException) -> None:
    prediction = getattr(exc, "prediction", None)  # ModelError: the failed prediction
    if prediction is not None:
        _from_prediction(call, prediction)
    status = getattr(exc, "status", None)
    if isinstance(status, int):
        call.attrs["ai.http_status"] = status
        if status in (400, 404, 422):
            call.span.status = "invalid_input"


def _finish_run(call: AICall) -> None:
    _from_prediction(call, call.handle)


def _count_item(call: AICall, item: Any) -> None:
    attrs = call.attrs
    attrs["ai.output_count"] = attrs.get("ai.output_count", 0) + 1


def _stream_event(call: AICall, event: Any) -> None:
    kind = getattr(getattr(event, "event", None), "value", None)
    if kind == "output":
        _count_item(call, event)
    elif kind == "done":  # data is {} or {"reason": "canceled" | "error" …}
        reason = getattr(event, "data", "")
        call.attrs["ai.prediction_status"] = "succeeded" if reason in ("", "{}") else "ended"


def _is_lazy(output: Any) -> bool:
    return hasattr(output, "__next__") or hasattr(output, "__anext__")


# -- wrappers ------------------------------------------------------------------------------------
def _run_args(args: Any, kwargs: Any) -> tuple[Any, Any]:
    ref = args[0] if args else kwargs.get("ref")
    value = args[1] if len(args) > 1 else kwargs.get("input")
    return ref, value


def _run(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    ref, value = _run_args(args, kwargs)
    model, version = safe(_ref, ref) or (None, None)
    with ai_call("replicate", "run", model, modality="image") as call:
        call.set_model(None, version=version)
        safe(_inputs, call, value)
        try:
            output = wrapped(*args, **kwargs)
        except Exception as exc:
            safe(_error, call, exc)
            raise
        if _is_lazy(output):  # an iterator model (an LLM): it polls as the caller iterates
            call.set_modality("text")
            return call.wrap_stream(output, _count_item, on_end=_finish_run, reenter=True)
        safe(_finish_run, call)
        return output


async def _async_run(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    ref, value = _run_args(args, kwargs)
    model, version = safe(_ref, ref) or (None, None)
    with ai_call("replicate", "run", model, modality="image") as call:
        call.set_model(None, version=version)
        safe(_inputs, call, value)
        try:
            output = await wrapped(*args, **kwargs)
        except Exception as exc:
            safe(_error, call, exc)
            raise
        if _is_lazy(output):
            call.set_modality("text")
            return call.wrap_stream(output, _count_item, on_end=_finish_run, reenter=True)
        safe(_finish_run, call)
        return output


def _stream(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    # A generator: the prediction is created on the first next(), inside the re-entered call.
    ref, value = _run_args(args, kwargs)
    model, version = safe(_ref, ref) or (None, None)
    with ai_call("replicate", "stream", model, modality="text") as call:
        call.set_model(None, version=version)
        safe(_inputs, call, value)
        return call.wrap_stream(wrapped(*args, **kwargs), _stream_event, reenter=True)


async def _async_stream(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    ref, value = _run_args(args, kwargs)
    model, version = safe(_ref, ref) or (None, None)
    with ai_call("replicate", "stream", model, modality="text") as call:
        call.set_model(None, version=version)
        safe(_inputs, call, value)
        return call.wrap_stream(await wrapped(*args, **kwargs), _stream_event, reenter=True)


def _create_target(kind: str, instance: Any, args: Any, kwargs: Any) -> tuple[Any, Any, Any]:
    """``(model, version, input)`` of a create call, whichever namespace it is on."""
    if kind == "version":  # Predictions.create(version, input, *, model=, deployment=)
        version = args[0] if args else kwargs.get("version")
        value = args[1] if len(args) > 1 else kwargs.get("input")
        target = kwargs.get("model") or kwargs.get("deployment")
        model, _ = _ref(target) if target is not None else (None, None)
        return model, getattr(version, "id", version), value
    if kind == "deployment_instance":  # Deployment(...).predictions.create(input)
        deployment = getattr(instance, "_deployment", None)
        model = f"{getattr(deployment, 'owner', '?')}/{getattr(deployment, 'name', '?')}"
        return model, None, args[0] if args else kwargs.get("input")
    target = args[0] if args else kwargs.get(kind)  # models/deployments namespaces
    value = args[1] if len(args) > 1 else kwargs.get("input")
    return _ref(target)[0], None, value


def _created(call: AICall, prediction: Any) -> None:
    call.handle = prediction
    _from_prediction(call, prediction)
    if call.operation == "predictions.create" and call.attrs.get("ai.prediction_status") in (
        "starting",
        "processing",
    ):
        call.set_cost(None, unknown="prediction still running: priced on its wait() span")


def _create(kind: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        model, version, value = safe(_create_target, kind, instance, args, kwargs) or (None,) * 3
        with ai_call("replicate", "predictions.create", model, modality="image") as call:
            call.set_model(None, version=version)
            if kind.startswith("deployment"):
                call.attrs["ai.deployment"] = model
            safe(_inputs, call, value)
            try:
                prediction = wrapped(*args, **kwargs)
            except Exception as exc:
                safe(_error, call, exc)
                raise
            safe(_created, call, prediction)
            return prediction

    return wrapper


def _async_create(kind: str) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        model, version, value = safe(_create_target, kind, instance, args, kwargs) or (None,) * 3
        with ai_call("replicate", "predictions.create", model, modality="image") as call:
            call.set_model(None, version=version)
            if kind.startswith("deployment"):
                call.attrs["ai.deployment"] = model
            safe(_inputs, call, value)
            try:
                prediction = await wrapped(*args, **kwargs)
            except Exception as exc:
                safe(_error, call, exc)
                raise
            safe(_created, call, prediction)
            return prediction

    return wrapper


def _wait(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    model = getattr(instance, "model", None)
    with ai_call("replicate", "predictions.wait", model, modality="image") as call:
        if call.handle is None:
            call.handle = instance
        try:
            return wrapped(*args, **kwargs)
        finally:
            safe(_from_prediction, call, instance)


async def _async_wait(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    model = getattr(instance, "model", None)
    with ai_call("replicate", "predictions.wait", model, modality="image") as call:
        if call.handle is None:
            call.handle = instance
        try:
            return await wrapped(*args, **kwargs)
        finally:
            safe(_from_prediction, call, instance)


def patch() -> None:
    """Instrument the Replicate SDK and re-bind its module aliases (idempotent)."""
    if _patches:
        return
    import replicate  # noqa: PLC0415 - only once replicate is imported

    wrap = _patches.wrap
    wrap("replicate.client", "Client.run", _run)
    wrap("replicate.client", "Client.async_run", _async_run)
    wrap("replicate.client", "Client.stream", _stream)
    wrap("replicate.client", "Client.async_stream", _async_stream)
    for module, owner, kind in (
        ("replicate.prediction", "Predictions", "version"),
        ("replicate.model", "ModelsPredictions", "model"),
        ("replicate.deployment", "DeploymentsPredictions", "deployment"),
        ("replicate.deployment", "DeploymentPredictions", "deployment_instance"),
    ):
        wrap(module, f"{owner}.create", _create(kind))
        wrap(module, f"{owner}.async_create", _async_create(kind))
    wrap("replicate.prediction", "Prediction.wait", _wait)
    wrap("replicate.prediction", "Prediction.async_wait", _async_wait)
    client = getattr(replicate, "default_client", None)
    for alias in _ALIASES:
        bound = getattr(replicate, alias, None)
        # Re-bind only an alias still bound to the default client: a user's own stays.
        if client is not None and getattr(bound, "__self__", None) is client:
            _patches.set(replicate, alias, getattr(client, alias))


def unpatch() -> None:
    """Remove every Replicate patch and restore the aliases (idempotent)."""
    _patches.undo()
