"""The image-service fields of an AI call (cache, content safety, rewritten prompt, image
parameters) and the decorator form of a call. Part of ``_ai`` (``AICall`` inherits
``CallFields``), split out for size: every setter here works only when called, so a call that
sets none of these fields pays nothing for them.

Attributes written (all on the ``ai.request`` span, so in every exporter's record; the column
stores keep ``ai.cache_status`` in its column and the rest in ``attributes``):

- ``ai.modality``: text, image, audio, embedding, video, … (set once when the call is made).
- ``ai.response_id``: the provider's id of its answer (a completion or generation id).
- ``ai.cache_status``: ``hit`` or ``miss``, for a call answered from a cache (the app's own, or
  the provider's).
- ``ai.content_violation`` (bool), ``ai.nsfw_flagged`` (images flagged), ``ai.content_flags``
  (the provider's category names, comma-joined): a violation also makes the span's status
  ``content_violation``, a user-caused outcome (``_core/status.py``), never a service failure.
- ``ai.prompt.transformed`` (bool) and ``ai.prompt.revised`` (the rewritten prompt, sanitized as
  the prompt is, ``[PRIVATE]`` for a private call).
- ``ai.image.width``, ``ai.image.height``, ``ai.image.steps``, ``ai.image.seed``,
  ``ai.image.sampler``, ``ai.image.guidance``, ``ai.image.count``: what the request asked for
  (``ai.width``/``ai.height``/``ai.image_count`` from ``set_images`` are what it produced, and
  what pricing reads).
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from .. import _setup
from .._core import span as _span
from .._core.redact import PRIVATE, truncate
from ._ai_values import clean_text

__all__ = ["CallFields", "decorate"]

F = TypeVar("F", bound=Callable[..., Any])

_INT64 = 1 << 63
_MAX_NAME = 64  # a sampler or category name
_MAX_FLAGS = 16
_INT_PARAMS = (
    ("width", "ai.image.width"),
    ("height", "ai.image.height"),
    ("steps", "ai.image.steps"),
    ("seed", "ai.image.seed"),
    ("count", "ai.image.count"),
)

# The names image APIs give their request parameters (Replicate, fal, AUTOMATIC1111, diffusers).
_ALIASES = {
    "width": "width",
    "height": "height",
    "steps": "steps",
    "num_inference_steps": "steps",
    "seed": "seed",
    "sampler": "sampler",
    "sampler_name": "sampler",
    "scheduler": "sampler",
    "guidance": "guidance",
    "guidance_scale": "guidance",
    "cfg_scale": "guidance",
    "count": "count",
    "num_outputs": "count",
    "num_images": "count",
    "batch_size": "count",
}


def _int(value: Any) -> int | None:
    # A request parameter, not usage: any int64 (seeds are large), never priced or counted.
    if type(value) is int and -_INT64 <= value < _INT64:
        return value
    if isinstance(value, float) and value.is_integer() and -_INT64 <= value < _INT64:
        return int(value)
    return None


def _name(value: Any) -> str | None:
    if isinstance(value, str) and value:
        return truncate(value, _MAX_NAME) if len(value) > _MAX_NAME else value
    return None


class CallFields:
    """Setters of the optional fields of an AI call (``AICall`` inherits them)."""

    __slots__ = ()

    span: _span.Span
    private: bool

    def set_modality(self, modality: str) -> None:
        """What the call produces or reads: ``text``, ``image``, ``audio``, ``embedding``….

        Set when the call is made (``ai_call(..., modality=)``); change it here when only the
        result tells (a generic GPU endpoint).
        """
        if modality:
            self.span.attrs["ai.modality"] = str(modality)

    def set_response_id(self, response_id: str | None) -> None:
        """The provider's id of its answer (``chatcmpl-…``, a generation id): ``ai.response_id``."""
        if response_id:
            self.span.attrs["ai.response_id"] = str(response_id)

    def set_cache(self, hit: bool | None) -> None:
        """Whether the answer came from a cache: ``ai.cache_status`` ``hit``/``miss``.

        ``None`` removes the status. A hit keeps pricing as it is: a hit the provider did not
        bill (the app's own cache) should also ``set_cost(0.0)``.
        """
        if hit is None:
            self.span.attrs.pop("ai.cache_status", None)
        else:
            self.span.attrs["ai.cache_status"] = "hit" if hit else "miss"

    def set_content_safety(
        self,
        violation: bool | None = None,
        *,
        flagged: int | None = None,
        categories: Iterable[str] | None = None,
    ) -> None:
        """The content-safety outcome: ``ai.content_violation``, ``ai.nsfw_flagged``, flags.

        ``flagged``: how many outputs the provider's safety checker flagged (fal's
        ``has_nsfw_concepts``); ``categories``: the provider's category names. ``violation``
        defaults to True when anything was flagged. A violation makes an ``ok`` call's status
        ``content_violation``: the user's outcome, counted in ``ai.user_errors`` and the
        violation rate, never as a service failure.
        """
        attrs = self.span.attrs
        count = None if flagged is None else _int(flagged)
        if count is not None and count >= 0:
            attrs["ai.nsfw_flagged"] = count
        names: list[str] = []
        if categories is not None and not isinstance(categories, str):
            for category in categories:
                name = _name(category)
                if name is not None and name not in names:
                    names.append(name)
                    if len(names) >= _MAX_FLAGS:
                        break
        elif isinstance(categories, str) and categories:
            names.append(_name(categories) or "")
        if names:
            attrs["ai.content_flags"] = ",".join(names)
        if violation is None:
            violation = bool(count) or bool(names)
        attrs["ai.content_violation"] = bool(violation)
        if violation and self.span.status == "ok":
            self.span.status = "content_violation"

    def set_prompt_transformed(self, transformed: bool = True, *, prompt: Any = None) -> None:
        """The prompt was rewritten before the call (``ai.prompt.transformed``).

        ``prompt``: the rewritten text (OpenAI's ``revised_prompt``, an app's prompt expander),
        kept as ``ai.prompt.revised`` after the same sanitizing as the prompt.
        """
        attrs = self.span.attrs
        attrs["ai.prompt.transformed"] = bool(transformed)
        if prompt is not None:
            span = self.span
            private = self.private or (span.end_ns == 0 and _private_trace(span))
            limit = _setup.current_config().redaction.prompt_max_chars
            attrs["ai.prompt.revised"] = PRIVATE if private else clean_text(prompt, limit)

    def set_image_params(
        self,
        *,
        width: int | None = None,
        height: int | None = None,
        steps: int | None = None,
        seed: int | None = None,
        sampler: str | None = None,
        guidance: float | None = None,
        count: int | None = None,
    ) -> None:
        """The image parameters the request asked for: ``ai.image.<name>``.

        What the call produced (and is priced by) is ``set_images``. Values of the wrong type
        are left out.
        """
        attrs = self.span.attrs
        given = (width, height, steps, seed, count)
        for value, (_, key) in zip(given, _INT_PARAMS, strict=True):
            if value is not None:
                checked = _int(value)
                if checked is not None:
                    attrs[key] = checked
        name = _name(sampler)
        if name is not None:
            attrs["ai.image.sampler"] = name
        if (
            isinstance(guidance, (int, float))
            and not isinstance(guidance, bool)
            and math.isfinite(guidance)
        ):
            attrs["ai.image.guidance"] = float(guidance)

    def set_image_params_from(self, inputs: Mapping[str, Any]) -> None:
        """``set_image_params`` from a provider's request body, by the usual parameter names
        (``num_inference_steps``, ``guidance_scale``, ``scheduler``, ``num_outputs``, …)."""
        found: dict[str, Any] = {}
        for key, value in inputs.items():
            name = _ALIASES.get(key) if type(key) is str else None
            if name is not None and name not in found:
                found[name] = value
        if found:
            self.set_image_params(**found)


def _private_trace(span: _span.Span) -> bool:
    local = getattr(span, "local", None)  # unset before the call starts
    return bool(local is not None and local.private)


def decorate(fn: F, new_call: Callable[[], Any]) -> F:
    """Wrap ``fn`` (sync or async) so that each of its calls runs inside ``new_call()``."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            with new_call():
                return await fn(*args, **kwargs)

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with new_call():
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]
