"""Configuration: option validation, ``OBS_*`` environment variables, precedence, configure()."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest

import obs_middleware as obs
from obs_middleware import _setup
from obs_middleware._core.config import (
    Config,
    HttpOptions,
    PipelineOptions,
    RedactionOptions,
    SamplingOptions,
    as_tuple,
    from_env,
    merge,
)
from obs_middleware.exporters import ConsoleExporter, JsonlExporter, MemoryExporter

Configure = Callable[..., Config]


def test_defaults() -> None:
    config = from_env({})
    assert config == Config()
    assert config.sampling == SamplingOptions(ratio=1.0, slow_ms=1000.0, keep_errors=True)
    assert config.pipeline.shutdown_timeout_s == 2.0
    assert config.http.exclude_paths == ("/health", "/healthz", "/livez", "/readyz")
    assert config.http.allow_sensitive_headers is False


def test_every_option_group_is_read_from_obs_env_vars() -> None:
    config = from_env(
        {
            "OBS_SERVICE": "images-api",
            "OBS_VERSION": "1.2.3",
            "OBS_ENVIRONMENT": "production",
            "OBS_EXPORTERS": "jsonl:/tmp/x.jsonl, console",
            "OBS_SAMPLE_RATIO": "0.25",
            "OBS_SLOW_MS": "250",
            "OBS_KEEP_ERRORS": "off",
            "OBS_QUEUE_SIZE": "1000",
            "OBS_BATCH_SIZE": "10",
            "OBS_EXPORT_INTERVAL_S": "0.1",
            "OBS_SHUTDOWN_TIMEOUT_S": "3",
            "OBS_FLUSH_ON_SIGTERM": "false",
            "OBS_EXCLUDE_PATHS": "/ping, /metrics",
            "OBS_CAPTURE_HEADERS": "user-agent",
            "OBS_ALLOW_SENSITIVE_HEADERS": "yes",
            "OBS_REQUEST_ID_HEADER": "X-Correlation-ID",
            "OBS_PROMPT_MAX_CHARS": "50",
            "OBS_REDACT_PATTERNS": "acct-[0-9]{4,8}",
        }
    )
    assert (config.service, config.version, config.environment) == (
        "images-api",
        "1.2.3",
        "production",
    )
    assert config.exporters == ("jsonl:/tmp/x.jsonl", "console")
    assert config.sampling == SamplingOptions(ratio=0.25, slow_ms=250.0, keep_errors=False)
    assert config.pipeline == PipelineOptions(
        queue_size=1000,
        batch_size=10,
        interval_s=0.1,
        shutdown_timeout_s=3.0,
        flush_on_sigterm=False,
    )
    assert config.http.exclude_paths == (
        "/health",
        "/healthz",
        "/livez",
        "/readyz",
        "/ping",
        "/metrics",
    )
    assert config.http.capture_headers == ("user-agent",)
    assert config.http.allow_sensitive_headers is True
    assert config.http.request_id_header == "X-Correlation-ID"
    assert config.redaction == RedactionOptions(
        prompt_max_chars=50, extra_patterns=("acct-[0-9]{4,8}",)
    )


@pytest.mark.parametrize(
    ("raw", "paths"),
    [
        ("/chat", ("/health", "/healthz", "/livez", "/readyz", "/chat")),
        ("/chat, -/livez, -/readyz, /health", ("/health", "/healthz", "/chat")),
        ("-/health,-/healthz,-/livez,-/readyz", ()),
        ("-/nowhere", ("/health", "/healthz", "/livez", "/readyz")),
    ],
)
def test_obs_exclude_paths_adds_to_the_defaults_and_a_minus_removes_one(
    raw: str, paths: tuple[str, ...]
) -> None:
    assert from_env({"OBS_EXCLUDE_PATHS": raw}).http.exclude_paths == paths


def test_obs_redact_patterns_takes_one_pattern_or_a_json_array() -> None:
    read = from_env({"OBS_REDACT_PATTERNS": '["a{1,2}", "tok_\\\\w+"]'}).redaction
    assert read.extra_patterns == ("a{1,2}", r"tok_\w+")


@pytest.mark.parametrize("raw", ["(unclosed", '["ok", 3]', "[not json"])
def test_invalid_obs_redact_patterns_warns_and_keeps_none(raw: str) -> None:
    with pytest.warns(UserWarning, match="OBS_REDACT_PATTERNS"):
        config = from_env({"OBS_REDACT_PATTERNS": raw, "OBS_PROMPT_MAX_CHARS": "10"})
    assert config.redaction == RedactionOptions(prompt_max_chars=10)


def test_an_invalid_extra_pattern_in_code_raises_naming_the_option() -> None:
    with pytest.raises(ValueError, match=r"redaction\.extra_patterns"):
        RedactionOptions(extra_patterns=("(",))


def test_known_http_methods_are_a_full_override_from_the_environment() -> None:
    config = from_env({"OBS_HTTP_KNOWN_METHODS": "GET, PROPFIND"})
    assert config.http.known_method_set == {"GET", "PROPFIND"}
    assert "QUERY" in from_env({}).http.known_method_set


def test_env_vars_of_one_group_are_validated_together() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = from_env({"OBS_QUEUE_SIZE": "100", "OBS_BATCH_SIZE": "10"})
    assert (config.pipeline.queue_size, config.pipeline.batch_size) == (100, 10)


@pytest.mark.parametrize("raw", ["1", "true", "YES", "on"])
def test_boolean_env_values(raw: str) -> None:
    assert from_env({"OBS_KEEP_ERRORS": raw}).sampling.keep_errors is True


@pytest.mark.parametrize(
    ("var", "raw", "read"),
    [
        ("OBS_SAMPLE_RATIO", "half", lambda c: c.sampling.ratio == 1.0),
        ("OBS_SAMPLE_RATIO", "2", lambda c: c.sampling.ratio == 1.0),
        ("OBS_SLOW_MS", "-1", lambda c: c.sampling.slow_ms == 1000.0),
        ("OBS_KEEP_ERRORS", "maybe", lambda c: c.sampling.keep_errors is True),
        ("OBS_QUEUE_SIZE", "0", lambda c: c.pipeline.queue_size == 20_000),
        ("OBS_QUEUE_SIZE", "1e3", lambda c: c.pipeline.queue_size == 20_000),
        ("OBS_BATCH_SIZE", "999999", lambda c: c.pipeline.batch_size == 512),
        ("OBS_SHUTDOWN_TIMEOUT_S", "soon", lambda c: c.pipeline.shutdown_timeout_s == 2.0),
    ],
)
def test_invalid_env_value_warns_and_keeps_default(
    var: str, raw: str, read: Callable[[Config], bool]
) -> None:
    with pytest.warns(UserWarning, match=var):
        config = from_env({var: raw, "OBS_SERVICE": "still-read"})
    assert read(config)
    assert config.service == "still-read"


def test_invalid_obs_exporters_env_warns_and_exports_nowhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OBS_EXPORTERS", "bogus")
    with pytest.warns(UserWarning, match="OBS_EXPORTERS"):
        config = _setup.build_config()
    assert config.exporters == ()


def test_unset_obs_exporters_keeps_the_development_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBS_EXPORTERS", raising=False)
    config = _setup.build_config()
    assert len(config.exporters) == 1
    assert isinstance(config.exporters[0], (ConsoleExporter, JsonlExporter))


def test_first_span_with_bad_env_never_raises_into_user_code(
    configured: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    _setup.restore(None, None)  # unconfigured: the first finished span configures from env
    monkeypatch.setenv("OBS_EXPORTERS", "bogus")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with obs.span("first"):
            pass
    made = _setup.current_pipeline()
    assert made is not None
    made.shutdown(1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SamplingOptions(ratio=1.5),
        lambda: SamplingOptions(ratio=-0.1),
        lambda: SamplingOptions(slow_ms=0),
        lambda: PipelineOptions(queue_size=0),
        lambda: PipelineOptions(queue_size=10, batch_size=11),
        lambda: PipelineOptions(batch_size=0),
        lambda: PipelineOptions(interval_s=0),
        lambda: PipelineOptions(shutdown_timeout_s=0),
    ],
)
def test_invalid_option_raises_value_error(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_configure_with_unknown_exporter_raises_value_error(configured: Configure) -> None:
    with pytest.raises(ValueError, match="unknown exporter"):
        configured(exporters=["bogus"])


def test_configure_with_object_lacking_exporter_methods_raises(configured: Configure) -> None:
    with pytest.raises(ValueError, match="lacks"):
        configured(exporters=[object()])


def test_configure_with_unknown_keyword_raises_type_error() -> None:
    with pytest.raises(TypeError):
        obs.configure(servce="typo")  # type: ignore[call-arg]


def test_merge_rejects_unknown_options() -> None:
    with pytest.raises(TypeError, match="unknown options"):
        merge(Config(), bogus=1)


def test_explicit_argument_wins_over_environment(
    configured: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OBS_SERVICE", "from-env")
    monkeypatch.setenv("OBS_ENVIRONMENT", "staging")
    config = configured(service="explicit", exporters="none")
    assert (config.service, config.environment) == ("explicit", "staging")


def test_exporter_names_resolve_to_objects(configured: Configure, tmp_path) -> None:
    config = configured(exporters=["console", f"jsonl:{tmp_path / 'x.jsonl'}", "memory"])
    console, jsonl, memory = config.exporters
    assert isinstance(console, ConsoleExporter)
    assert isinstance(jsonl, JsonlExporter) and jsonl.path == str(tmp_path / "x.jsonl")
    assert isinstance(memory, MemoryExporter)


def test_exporters_none_means_no_exporter(configured: Configure) -> None:
    assert configured(exporters="none").exporters == ()


def test_default_exporter_is_jsonl_when_stdout_is_not_a_tty(
    configured: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    (exporter,) = configured().exporters
    assert isinstance(exporter, JsonlExporter) and exporter.path is None


def test_configure_returns_effective_config_and_resource_is_used(configured: Configure) -> None:
    memory = MemoryExporter()
    configured(service="svc", environment="prod", version="9", exporters=[memory])
    with obs.span("x"):
        pass
    assert obs.flush(5)
    (record,) = memory.records
    assert (record["service"], record["environment"]) == ("svc", "prod")


def test_reconfiguring_flushes_what_the_previous_pipeline_queued(configured: Configure) -> None:
    first = MemoryExporter()
    configured(exporters=[first], pipeline=PipelineOptions(interval_s=60, flush_on_sigterm=False))
    with obs.span("before"):
        pass
    second = MemoryExporter()
    configured(exporters=[second])
    assert [r["name"] for r in first.records] == ["before"]
    assert second.records == []


def test_as_tuple_normalises() -> None:
    assert as_tuple(None) is None
    assert as_tuple("a, b,,") == ("a", "b")
    assert as_tuple(["x"]) == ("x",)


def test_http_options_are_frozen() -> None:
    with pytest.raises(AttributeError):
        HttpOptions().capture_headers = ("x",)  # type: ignore[misc]
