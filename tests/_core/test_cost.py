"""Cost: each pricing model against a hand-computed figure, unknown reasons, user overrides."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obs_middleware._core import cost
from obs_middleware._core.config import PricingOptions
from obs_middleware._core.cost import Price, Usage, estimate

VERSION = json.loads(Path(cost.__file__).with_name("pricing.json").read_text())["version"]


def test_per_token_bills_cached_and_reasoning_parts_at_their_own_rates() -> None:
    prices = PricingOptions(
        prices={
            "models": {
                "openai": {
                    "tuned": {
                        "per_token": {
                            "input": 2.0,
                            "cached_input": 0.5,
                            "output": 8.0,
                            "reasoning": 10.0,
                        }
                    }
                }
            }
        }
    )
    usage = Usage(input_tokens=1000, cached_tokens=200, output_tokens=500, reasoning_tokens=100)
    # (800 x 2.0 + 200 x 0.5 + 400 x 8.0 + 100 x 10.0) / 1e6
    assert estimate("openai", "tuned", usage, prices).usd == pytest.approx(0.0059)


def test_per_token_defaults_cached_to_input_and_reasoning_to_output_rate() -> None:
    usage = Usage(input_tokens=1000, cached_tokens=200, output_tokens=500, reasoning_tokens=100)
    # gpt-3.5-turbo: 0.5 in, 1.5 out, no cached/reasoning rates: (1000 x 0.5 + 500 x 1.5) / 1e6
    assert estimate("openai", "gpt-3.5-turbo", usage).usd == pytest.approx(0.00125)


def test_shipped_gpt_4o_mini_price_of_one_chat_call() -> None:
    usage = Usage(input_tokens=20, cached_tokens=0, output_tokens=10)
    # (20 x 0.15 + 10 x 0.60) / 1e6
    assert estimate("openai", "gpt-4o-mini", usage) == Price(9e-06, None, VERSION)


def test_dated_snapshot_uses_longest_matching_base_model() -> None:
    usage = Usage(input_tokens=1_000_000)
    assert estimate("openai", "gpt-4o-mini-2024-07-18", usage).usd == pytest.approx(0.15)
    assert estimate("openai", "gpt-4o-2024-08-06", usage).usd == pytest.approx(2.5)


def test_the_most_specific_of_requested_and_response_names_prices_the_call() -> None:
    per_token = {"per_token": {"input": 1.0}}
    prices = PricingOptions(
        prices={
            "models": {
                "openai": {
                    "m": per_token,
                    "m-2024-05-13": {"per_token": {"input": 2.0}},
                    "m-turbo": {"per_token": {"input": 3.0}},
                }
            }
        }
    )
    usage = Usage(input_tokens=1_000_000)

    def usd(model: str, response: str | None) -> float | None:
        return estimate("openai", model, usage, prices, response_model=response).usd

    assert usd("m", "m-2024-05-13") == pytest.approx(2.0)  # the snapshot's own price
    assert usd("m", "m-2024-08-06") == pytest.approx(1.0)  # its family's
    assert usd("m-turbo-preview", "m-0125-preview") == pytest.approx(3.0)  # an alias's family
    assert usd("acme/deployment", "m-2024-05-13") == pytest.approx(2.0)  # only one has a price
    assert usd("m", None) == pytest.approx(1.0)


def test_fine_tuned_model_has_no_price() -> None:
    price = estimate("openai", "ft:gpt-4o-mini-2024-07-18:acme::x1", Usage(input_tokens=5))
    assert price.usd is None
    assert price.unknown == "no price for openai model ft:gpt-4o-mini-2024-07-18:acme::x1"


def test_per_image_by_size_and_quality() -> None:
    usage = Usage(images=2, size="1024x1792", quality="hd")
    assert estimate("openai", "dall-e-3", usage).usd == pytest.approx(0.24)  # 2 x 0.12


def test_per_image_size_from_pixels_and_wildcard() -> None:
    assert estimate("openai", "dall-e-2", Usage(images=3, width=512, height=512)).usd == (
        pytest.approx(0.054)  # 3 x 0.018
    )
    flux = Usage(images=3)
    assert estimate("replicate", "black-forest-labs/flux-schnell", flux).usd == pytest.approx(0.009)


def test_per_image_without_a_matching_size_is_unknown_with_reason() -> None:
    price = estimate("openai", "dall-e-3", Usage(images=1, size="640x480", quality="hd"))
    assert price.usd is None
    assert "no image price for size=640x480 quality=hd" in (price.unknown or "")


def test_per_megapixel_rounds_up_per_image_when_asked() -> None:
    usage = Usage(images=2, width=1024, height=768)  # 0.786 MP -> billed as 1 MP each
    assert estimate("fal", "fal-ai/flux/dev", usage).usd == pytest.approx(0.05)  # 2 x 1 x 0.025
    exact = PricingOptions(prices={"models": {"fal": {"m": {"per_megapixel": {"usd": 0.1}}}}})
    usage = Usage(width=1500, height=1000)  # 1.5 MP, one image by default
    assert estimate("fal", "m", usage, exact).usd == pytest.approx(0.15)


def test_per_gpu_second_with_the_calls_gpu_and_count() -> None:
    usage = Usage(gpu_seconds=12.5, gpu="A100-80GB", gpu_count=2)
    # Modal default: 12.5 s x 2 x 0.000694 $/s
    assert estimate("modal", "any-function", usage).usd == pytest.approx(0.01735)


def test_per_gpu_second_with_the_models_hardware_or_a_flat_rate() -> None:
    usage = Usage(gpu_seconds=4.2)
    # stability-ai/sdxl runs on nvidia-l40s: 4.2 x 0.000975
    assert estimate("replicate", "stability-ai/sdxl", usage).usd == pytest.approx(0.004095)
    flat = PricingOptions(
        prices={"models": {"replicate": {"a/b": {"per_gpu_second": {"usd": 0.01}}}}}
    )
    assert estimate("replicate", "a/b", usage, flat).usd == pytest.approx(0.042)


def test_per_gpu_second_with_an_unknown_gpu_is_unknown() -> None:
    price = estimate("modal", "fn", Usage(gpu_seconds=3.0, gpu="TPU-v9"))
    assert price.usd is None
    assert "no rate for GPU 'TPU-v9'" in (price.unknown or "")


def test_per_unit_wins_over_megapixels_when_units_are_reported() -> None:
    usage = Usage(images=1, width=1024, height=1024, units=3)
    assert estimate("fal", "fal-ai/flux/dev", usage).usd == pytest.approx(0.075)  # 3 x 0.025


def test_no_usage_is_unknown_not_zero() -> None:
    price = estimate("openai", "gpt-4o", Usage())
    assert price == Price(None, "usage not reported for per_token", VERSION)


def test_unknown_provider_and_model() -> None:
    assert estimate("acme", None, Usage(units=1)).unknown == "no price for acme model (none)"


def test_usage_too_large_for_a_float_is_unknown_not_an_exception() -> None:
    price = estimate("openai", "gpt-4o", Usage(input_tokens=10**400))
    assert price.usd is None
    assert price.unknown is not None and price.unknown.startswith("usage out of range")


def test_zero_usage_is_a_known_zero() -> None:
    assert estimate("openai", "gpt-4o", Usage(input_tokens=0, output_tokens=0)).usd == 0.0


def test_user_prices_extend_and_override_and_mark_the_version() -> None:
    options = PricingOptions(
        prices={
            "models": {"openai": {"gpt-4o": {"per_token": {"input": 1.0, "output": 1.0}}}},
            "gpu_per_second": {"modal": {"A100-80GB": 0.001}},
        }
    )
    usage = Usage(input_tokens=1_000_000)
    price = estimate("openai", "gpt-4o", usage, options)
    assert price == Price(1.0, None, f"{VERSION}+custom")
    # other shipped entries stay
    assert estimate("openai", "gpt-4o-mini", usage, options).usd == pytest.approx(0.15)
    modal = estimate("modal", "fn", Usage(gpu_seconds=10, gpu="A100-80GB"), options)
    assert modal.usd == pytest.approx(0.01)


def test_user_version_is_kept() -> None:
    options = PricingOptions(prices={"version": "acme-2026-02", "models": {}})
    assert estimate("openai", "gpt-4o", Usage(input_tokens=1), options).version == "acme-2026-02"


def test_pricing_file_then_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"acme": {"m": {"per_unit": {"usd": 2.0}}}}}))
    options = PricingOptions(
        file=str(path), prices={"models": {"acme": {"n": {"per_unit": {"usd": 3.0}}}}}
    )
    assert estimate("acme", "m", Usage(units=2), options).usd == pytest.approx(4.0)
    assert estimate("acme", "n", Usage(units=2), options).usd == pytest.approx(6.0)


def test_unreadable_pricing_file_warns_and_keeps_shipped_prices(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    options = PricingOptions(file=str(tmp_path / "missing.json"))
    with caplog.at_level(logging.WARNING, logger="obs_middleware"):
        price = estimate("openai", "gpt-4o-mini", Usage(input_tokens=20, output_tokens=10), options)
    assert price == Price(9e-06, None, VERSION)
    assert "ignoring pricing file" in caplog.text


def test_table_is_built_once_per_options_object() -> None:
    options = PricingOptions(prices={"models": {}})
    assert cost.table(options) is cost.table(options)
    assert cost.table(None) is not cost.table(options)


def test_every_shipped_entry_uses_a_known_pricing_model() -> None:
    data = json.loads(Path(cost.__file__).with_name("pricing.json").read_text())
    kinds = {"per_unit", "per_token", "per_image", "per_megapixel", "per_gpu_second"}
    for provider, models in data["models"].items():
        for model, entry in models.items():
            assert entry and set(entry) <= kinds, (provider, model)
    for provider, entry in data["defaults"].items():
        assert set(entry) <= kinds, provider


@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False))
def test_round_usd_is_round_to_10_decimals(usd: float) -> None:
    # Equal but for halfway cases, where multiplying by 1e10 first may round the other way.
    assert abs(cost.round_usd(usd) - round(usd, 10)) <= 1e-10 + abs(usd) * 2**-50


def test_round_usd_removes_float_noise() -> None:
    assert cost.round_usd(12 * 0.15 / 1e6 + 5 * 0.6 / 1e6) == 4.8e-06
    assert cost.round_usd(0.1 + 0.2) == 0.3
    assert cost.round_usd(1.8000000000000002e-06) == 1.8e-06
