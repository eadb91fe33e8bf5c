"""Cost: the price of one AI call from what it used, by its pricing model.

Pricing models: per token (input, cached, output, reasoning), per image, per megapixel, per
GPU-second, per billable unit.

The shipped table (``pricing.json``, versioned) is merged with the user's ``PricingOptions``
(a JSON file, then ``prices``); the merged table is built once per options object. ``estimate``
returns a ``Price``: USD, or ``unknown`` with the reason — never a silent 0.

Pricing models, tried in this order, the first whose quantities are known wins:

- ``per_unit``: billable units (fal ``x-fal-billable-units``) * ``usd``.
- ``per_token``: USD per 1M tokens. ``input`` counts include ``cached``; ``output`` counts include
  ``reasoning`` (the OpenAI convention), so each part is billed once at its own rate.
- ``per_image``: USD per image keyed ``"WxH/quality"``, ``"WxH"``, ``"*/quality"`` or ``"*"``.
- ``per_megapixel``: ``usd`` * width * height / 1e6 * images (``round_up``: whole MP per image).
- ``per_gpu_second``: seconds * gpu count * rate (``usd``, or ``gpu_per_second[provider][gpu]``
  with the call's GPU, else the entry's ``gpu``).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from .config import PricingOptions
from .forks import renew_after_fork

__all__ = ["Price", "Usage", "estimate", "round_usd", "table"]

_log = logging.getLogger("obs_middleware")
_DATA = Path(__file__).with_name("pricing.json")
_MAX_CACHED_MODELS = 1024
_ORDER = ("per_unit", "per_token", "per_image", "per_megapixel", "per_gpu_second")


@dataclass
class Usage:
    """What one call used; ``None`` = not reported. Integrations fill it through ``AICall``."""

    input_tokens: int | None = None
    cached_tokens: int | None = None
    output_tokens: int | None = None
    reasoning_tokens: int | None = None
    images: int | None = None
    width: int | None = None
    height: int | None = None
    size: str | None = None  # "1024x1024", when the provider prices by size label
    quality: str | None = None
    gpu_seconds: float | None = None
    gpu: str | None = None
    gpu_count: int = 1
    units: float | None = None


class Price(NamedTuple):
    """``usd`` when priced, else ``unknown`` says why; ``version`` of the table used."""

    usd: float | None
    unknown: str | None
    version: str


class Table:
    """A merged pricing table; each model's pricers are built once (``quote``)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.version = str(data.get("version", "unversioned"))
        self.models: dict[str, dict[str, Any]] = {
            p: dict(m) for p, m in (data.get("models") or {}).items()
        }
        self.defaults: dict[str, Any] = dict(data.get("defaults") or {})
        self.gpu: dict[str, dict[str, float]] = {
            p: dict(r) for p, r in (data.get("gpu_per_second") or {}).items()
        }
        self._prefixes = {p: sorted(m, key=len, reverse=True) for p, m in self.models.items()}
        # per (provider, model, response model), see quote()
        self._plans: dict[tuple[str, str | None, str | None], _Plan] = {}

    def entry(
        self, provider: str, model: str | None, response_model: str | None = None
    ) -> Mapping[str, Any] | None:
        """Find the pricing entry of a call to ``model`` answered by ``response_model``.

        The most specific table name either matches: an exact name, or the longest ``name-…``
        prefix (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``); the longer table name wins, the
        response's on a tie (a snapshot priced on its own beats its family; an alias's family,
        ``gpt-4-turbo-preview``, beats the bare ``gpt-4`` its snapshot's name starts with).
        Neither: the provider default.
        """
        best: str | None = None
        for name in (response_model, model):
            found = self._name(provider, name) if name else None
            if found is not None and (best is None or len(found) > len(best)):
                best = found
        if best is None:
            return self.defaults.get(provider)
        entry: Mapping[str, Any] = self.models[provider][best]
        return entry

    def _name(self, provider: str, model: str) -> str | None:
        """The table's name for ``model``: itself, or its longest ``name-…`` prefix."""
        models = self.models.get(provider, {})
        if model in models:
            return model
        for name in self._prefixes.get(provider, ()):
            if model.startswith(name) and model[len(name)] in "-@:":
                return name
        return None

    def quote(
        self, provider: str, model: str | None, usage: Usage, response_model: str | None = None
    ) -> tuple[float | None, str | None]:
        """``(usd, None)``, or ``(None, reason)``; never raises on bad table data or usage.

        ``response_model``: the model the provider says answered, when it names one (see
        ``entry``). The pricers of a pair of names are built once (rates as floats), so a call
        pays for its own arithmetic only.
        """
        key = (provider, model, response_model)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(provider, model, response_model)
            if len(self._plans) < _MAX_CACHED_MODELS:
                self._plans[key] = plan
        if isinstance(plan, str):
            return None, plan
        pricers, kinds = plan
        try:
            for pricer in pricers:
                usd = pricer(usage)
                if usd is not None:
                    return round_usd(usd), None
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            return None, f"bad price entry for {model}: {exc}"
        except ArithmeticError as exc:  # usage too large for a float
            return None, f"usage out of range: {exc}"
        return None, f"usage not reported for {kinds}"

    def _plan(self, provider: str, model: str | None, response_model: str | None) -> _Plan:
        entry = self.entry(provider, model, response_model)
        if entry is None:
            return f"no price for {provider} model {response_model or model or '(none)'}"
        gpu = self.gpu.get(provider, {})
        pricers = tuple(
            _pricer(kind, entry[kind], gpu) for kind in _ORDER if entry.get(kind) is not None
        )
        return pricers, "/".join(k for k in _ORDER if k in entry) or "no pricing model"


_lock = threading.Lock()
renew_after_fork(globals(), "_lock", threading.Lock)
_shipped: dict[str, Any] | None = None
_tables: tuple[PricingOptions | None, Table] | None = None


def _load_shipped() -> dict[str, Any]:
    global _shipped
    if _shipped is None:
        _shipped = json.loads(_DATA.read_text("utf-8"))
    return _shipped


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay ``extra``: a model entry or provider default replaces the shipped one whole."""
    out = dict(base)
    for section in ("models", "gpu_per_second"):
        merged = {p: dict(v) for p, v in (base.get(section) or {}).items()}
        for provider, entries in (extra.get(section) or {}).items():
            merged.setdefault(provider, {}).update(entries)
        out[section] = merged
    out["defaults"] = {**(base.get("defaults") or {}), **(extra.get("defaults") or {})}
    if "version" in extra:
        out["version"] = extra["version"]
    return out


def table(options: PricingOptions | None = None) -> Table:
    """Return the pricing table for ``options`` (shipped prices when None), built once."""
    global _tables
    cached = _tables
    if cached is not None and cached[0] is options:
        return cached[1]
    with _lock:
        data = _load_shipped()
        overlays: list[Mapping[str, Any]] = []
        if options is not None and options.file:
            try:
                overlays.append(json.loads(Path(options.file).read_text("utf-8")))
            except (OSError, ValueError):
                _log.warning(
                    "obs-middleware: ignoring pricing file %r", options.file, exc_info=True
                )
        if options is not None and options.prices:
            overlays.append(options.prices)
        for overlay in overlays:
            data = _merge(data, overlay)
        if overlays and not any("version" in o for o in overlays):
            data = {**data, "version": f"{data.get('version')}+custom"}
        built = Table(data)
        _tables = (options, built)
    return built


def round_usd(usd: float) -> float:
    """``usd`` to 10 decimals (no float noise such as 1.8000000000000002e-06), like
    ``round(usd, 10)`` at a tenth of its cost: that goes through decimal string conversion.
    """
    if -1e5 < usd < 1e5:  # n below 2**53: n / 1e10 is the double nearest the decimal
        return round(usd * 1e10) / 1e10
    return round(usd, 10)


def estimate(
    provider: str,
    model: str | None,
    usage: Usage,
    options: PricingOptions | None = None,
    *,
    response_model: str | None = None,
) -> Price:
    """Price one call (to ``model``, answered by ``response_model`` when the provider said).

    Never raises on bad table data: that becomes ``unknown``.
    """
    prices = table(options)
    usd, unknown = prices.quote(provider, model, usage, response_model)
    return Price(usd, unknown, prices.version)


Pricer = Callable[[Usage], "float | None"]
# A model's pricers in ``_ORDER`` and the names of its pricing models; or why it has no price.
_Plan = tuple[tuple[Pricer, ...], str] | str


def _pricer(kind: str, params: Any, gpu: Mapping[str, float]) -> Pricer:
    """``kind``'s pricer for ``params``; per-token rates converted once when they are valid."""
    if kind == "per_token":
        try:
            return _token_pricer(params)
        except (TypeError, ValueError, AttributeError):
            pass  # the generic pricer raises it when the call has tokens: "bad price entry"
    generic = _PRICERS[kind]
    return lambda usage: generic(params, usage, gpu)


def _token_pricer(params: Mapping[str, Any]) -> Pricer:
    rate_in = float(params.get("input", 0.0))
    rate_cached = float(params.get("cached_input", rate_in))
    rate_out = float(params.get("output", 0.0))
    rate_reason = float(params.get("reasoning", rate_out))

    def price(usage: Usage) -> float | None:
        tokens_in = usage.input_tokens
        tokens_out = usage.output_tokens
        if tokens_in is None and tokens_out is None:
            return None
        tokens_in = tokens_in or 0
        tokens_out = tokens_out or 0
        # Not min(): ~1.5k instructions a call on CPython 3.11, against ~100 for a comparison.
        cached = usage.cached_tokens or 0
        cached = cached if cached < tokens_in else tokens_in
        reasoning = usage.reasoning_tokens or 0
        reasoning = reasoning if reasoning < tokens_out else tokens_out
        return (
            (tokens_in - cached) * rate_in
            + cached * rate_cached
            + (tokens_out - reasoning) * rate_out
            + reasoning * rate_reason
        ) / 1e6

    return price


def _per_unit(params: Mapping[str, Any], usage: Usage, _gpu: Mapping[str, float]) -> float | None:
    if usage.units is None:
        return None
    return float(usage.units) * float(params["usd"])


def _per_token(params: Mapping[str, Any], usage: Usage, _gpu: Mapping[str, float]) -> float | None:
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    return _token_pricer(params)(usage)


def _per_image(params: Mapping[str, Any], usage: Usage, _gpu: Mapping[str, float]) -> float | None:
    if usage.images is None:
        return None
    size = usage.size or (f"{usage.width}x{usage.height}" if usage.width and usage.height else None)
    quality = usage.quality
    keys = []
    if size and quality:
        keys.append(f"{size}/{quality}")
    if size:
        keys.append(size)
    if quality:
        keys.append(f"*/{quality}")
    keys.append("*")
    for key in keys:
        if key in params:
            return usage.images * float(params[key])
    raise ValueError(f"no image price for size={size} quality={quality}")


def _per_megapixel(
    params: Mapping[str, Any], usage: Usage, _gpu: Mapping[str, float]
) -> float | None:
    if not (usage.width and usage.height):
        return None
    megapixels = usage.width * usage.height / 1e6
    if params.get("round_up"):
        megapixels = math.ceil(megapixels)
    images = usage.images if usage.images is not None else 1
    return images * megapixels * float(params["usd"])


def _per_gpu_second(
    params: Mapping[str, Any], usage: Usage, gpu_rates: Mapping[str, float]
) -> float | None:
    if usage.gpu_seconds is None:
        return None
    if "usd" in params:
        rate = float(params["usd"])
    else:
        gpu = usage.gpu or params.get("gpu")
        if gpu is None:
            raise ValueError("no GPU type known")
        if gpu not in gpu_rates:
            raise ValueError(f"no rate for GPU {gpu!r}")
        rate = float(gpu_rates[gpu])
    return usage.gpu_seconds * max(usage.gpu_count, 1) * rate


_PRICERS = {
    "per_unit": _per_unit,
    "per_token": _per_token,
    "per_image": _per_image,
    "per_megapixel": _per_megapixel,
    "per_gpu_second": _per_gpu_second,
}
