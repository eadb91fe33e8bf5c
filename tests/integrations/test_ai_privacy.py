"""Property: prompts, inputs and error messages embedding provider keys, bearer tokens, fal keys
and JWTs never export those values; a private call or trace exports no part of the prompt."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import obs_middleware as obs
from obs_middleware.integrations._ai import ai_call
from obs_middleware.testing import Capture

ALNUM = "[A-Za-z0-9]"
B64URL = "[A-Za-z0-9_-]"
secrets = st.one_of(
    st.from_regex(rf"sk-{ALNUM}{{20,48}}", fullmatch=True),
    st.from_regex(rf"sk-proj-{ALNUM}{{20,48}}", fullmatch=True),
    st.from_regex(rf"r8_{ALNUM}{{30,40}}", fullmatch=True),
    st.from_regex(r"[0-9a-f]{32}", fullmatch=True).flatmap(
        lambda hex32: st.uuids().map(lambda u: f"{u}:{hex32}")
    ),
    st.from_regex(rf"eyJ{B64URL}{{10,30}}\.{B64URL}{{10,40}}\.{B64URL}{{10,40}}", fullmatch=True),
)
# Starts with a non-hex letter: an all-digit token would match inside trace ids.
bearer_tokens = st.from_regex(r"[g-zG-Z][A-Za-z0-9._-]{15,39}", fullmatch=True)
# Distinctive filler words (no record key starts with "qx"), so a leak is unambiguous.
words = st.from_regex(r"qx[a-z]{6,10}", fullmatch=True)
separators = st.sampled_from([" ", "\n", ": ", " (", '"', ", key "])


@st.composite
def prompts(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """A prompt mixing filler words, secrets and ``Bearer <token>``; its secrets and words."""
    parts: list[str] = []
    found: list[str] = []
    fill: list[str] = []
    for _ in range(draw(st.integers(1, 4))):
        word = draw(words)
        fill.append(word)
        kind = draw(st.sampled_from(["secret", "bearer"]))
        if kind == "secret":
            secret = draw(secrets)
            parts += [word, draw(separators), secret, draw(separators)]
        else:
            secret = draw(bearer_tokens)
            parts += [word, draw(separators), "Bearer ", secret, draw(separators)]
        found.append(secret)
    return "".join(parts), found, fill


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prompt=prompts(),
    privacy=st.sampled_from(["none", "call", "trace"]),
    failure=st.sampled_from(["none", "status", "exception", "raised"]),
)
def test_no_secret_and_no_private_prompt_is_ever_exported(
    obs_capture: Capture,
    prompt: tuple[str, list[str], list[str]],
    privacy: str,
    failure: str,
) -> None:
    text, found, fill = prompt
    obs_capture.exporter.clear()  # the previous example's records were flushed already
    try:
        with obs.span("request"):
            if privacy == "trace":
                obs.mark_private()
            with ai_call("openai", "chat", "gpt-4o-mini", private=privacy == "call") as call:
                call.set_inputs(
                    prompt=text,
                    params={"system": text, "api_key": found[0], "token": found[-1], "n": 1},
                )
                call.set_tokens(input=20, output=10)
                if failure == "status":
                    call.set_status("error", error_type="BadRequest", message=text)
                elif failure == "exception":
                    call.fail(ValueError(text))
                elif failure == "raised":
                    raise RuntimeError(text)
    except RuntimeError:
        assert failure == "raised"
    records = obs_capture.records
    exported = json.dumps(records, ensure_ascii=False, default=str)
    (call_record,) = [r for r in records if r["name"] == "ai.request"]
    assert call_record["cost.usd"] > 0
    for secret in found:
        assert secret not in exported
    if privacy != "none":
        for word in fill:
            assert word not in exported
        assert call_record["ai.prompt"] == "[PRIVATE]"


@pytest.mark.parametrize("privacy", ["call", "trace"])
def test_private_calls_raised_message_is_not_exported_by_the_enclosing_span(
    obs_capture: Capture, privacy: str
) -> None:
    with pytest.raises(RuntimeError), obs.span("request"):
        if privacy == "trace":
            obs.mark_private()
        with ai_call("openai", "chat", "gpt-4o-mini", private=privacy == "call") as call:
            call.set_inputs(prompt="qxsecretword about Alice")
            raise RuntimeError("refused: qxsecretword about Alice")
    assert obs_capture.span("ai.request")["error_message"] == "[PRIVATE]"
    assert "qxsecretword" not in json.dumps(obs_capture.records)
