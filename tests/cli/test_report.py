"""``obs report``: its figures equal those computed directly from the exported spans."""

from __future__ import annotations

import io
import json
import random
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

import obs_middleware as obs
from obs_middleware._core import span as _span
from obs_middleware.cli import main
from obs_middleware.cli.report import figures, parse_since, render, report
from obs_middleware.exporters.memory import MemoryExporter
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.sqlite_store import Filters, Store

ROUTES = [("GET", "/v1/images/{image_id}"), ("POST", "/v1/images"), ("POST", "/v1/chat")]
MODELS = [("openai", "gpt-4o-mini"), ("replicate", "stability-ai/sdxl"), ("fal", "fal-ai/flux")]
USERS = [("u1", "free"), ("u2", "pro"), ("u3", "team")]


def timed(name: str, duration_ms: float, kind: str = "internal", **attrs) -> _span.Span:
    s = _span.Span(name, attrs, kind).start()
    s.end(s.start_ns + int(duration_ms * 1_000_000))
    return s


def make_traffic(rng: random.Random, requests: int) -> None:
    """Server spans with AI and DB children, durations and costs drawn at random."""
    for i in range(requests):
        method, route = rng.choice(ROUTES)
        user, tier = rng.choice(USERS)
        status_code = 500 if rng.random() < 0.1 else 200
        server = _span.Span(f"{method} {route}", {}, "server").start()
        obs.set_user(user, tier)
        provider, model = rng.choice(MODELS)
        ai = timed(
            "ai.request",
            rng.uniform(5, 400),
            "client",
            **{
                "ai.provider": provider,
                "ai.model": model,
                "ai.input_tokens": rng.randint(1, 900),
                "ai.output_tokens": rng.randint(1, 300),
                "cost.usd": round(rng.uniform(0, 0.05), 6),
            },
        )
        if i % 7 == 0:
            ai.status = "error"
        statement = rng.choice(
            ["SELECT * FROM images WHERE id = ?", "INSERT INTO chats VALUES (?)"]
        )
        timed("db.query", rng.uniform(0.1, 150), "client", **{"db.statement": statement})
        server.set(**{"http.method": method, "http.route": route, "http.status_code": status_code})
        if status_code >= 500:
            server.status = "error"
        server.end(server.start_ns + int(rng.uniform(1, 900) * 1_000_000))


def quantiles(values: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


@pytest.fixture
def store(tmp_path: Path, configured) -> tuple[Path, list[dict]]:
    path = tmp_path / "obs.db"
    memory = MemoryExporter()
    configured(service="svc", exporters=[SqliteExporter(path), memory])
    make_traffic(random.Random(3), 400)
    obs.shutdown(10.0)
    return path, memory.records


def test_route_counts_errors_and_percentiles_equal_those_of_the_spans(store) -> None:
    path, records = store
    by_route: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        if r["type"] == "span" and r.get("span.kind") == "server":
            by_route[(r["http.method"], r["http.route"])].append(r)
    expected = {
        key: {
            "requests": len(recs),
            "errors": sum(r["status"] == "error" for r in recs),
            **quantiles([r["duration_ms"] for r in recs]),
        }
        for key, recs in by_route.items()
    }
    s = Store(path)
    got = {(r["method"], r["route"]): r for r in figures(s, Filters())["routes"]}
    s.close()
    assert set(got) == set(expected)
    for key, want in expected.items():
        assert got[key]["requests"] == want["requests"]
        assert got[key]["errors"] == want["errors"]
        for q in ("p50", "p95", "p99", "max"):
            assert got[key][q] == pytest.approx(want[q], rel=1e-12), (key, q)


def test_ai_calls_tokens_and_costs_equal_those_of_the_spans(store) -> None:
    path, records = store
    ai = [r for r in records if r["type"] == "span" and r.get("ai.provider")]
    s = Store(path)
    data = figures(s, Filters())
    s.close()
    by_model = {(a["provider"], a["model"]): a for a in data["ai_by_model"]}
    for provider, model in MODELS:
        recs = [r for r in ai if (r["ai.provider"], r["ai.model"]) == (provider, model)]
        got = by_model[(provider, model)]
        assert got["calls"] == len(recs)
        assert got["errors"] == sum(r["status"] == "error" for r in recs)
        assert got["input_tokens"] == sum(r["ai.input_tokens"] for r in recs)
        assert got["output_tokens"] == sum(r["ai.output_tokens"] for r in recs)
        assert got["cost_usd"] == pytest.approx(sum(r["cost.usd"] for r in recs), rel=1e-12)
        assert got["p95"] == pytest.approx(quantiles([r["duration_ms"] for r in recs])["p95"])
    by_user = {a["user"]: a for a in data["ai_by_user"]}
    by_tier = {a["tier"]: a for a in data["ai_by_tier"]}
    for user, tier in USERS:
        mine = [r for r in ai if r["user_id"] == user]
        assert by_user[user]["tier"] == tier
        assert by_user[user]["cost_usd"] == pytest.approx(sum(r["cost.usd"] for r in mine))
        assert by_tier[tier]["calls"] == len([r for r in ai if r["tier"] == tier])
    total = sum(r["cost.usd"] for r in ai)
    assert sum(a["cost_usd"] for a in data["ai_by_tier"]) == pytest.approx(total)


def test_slow_queries_are_ranked_by_their_slowest_call(store) -> None:
    path, records = store
    queries = [r for r in records if r["type"] == "span" and r.get("db.statement")]
    s = Store(path)
    got = figures(s, Filters())["slow_queries"]
    s.close()
    assert [q["max"] for q in got] == sorted((q["max"] for q in got), reverse=True)
    for q in got:
        durations = [r["duration_ms"] for r in queries if r["db.statement"] == q["statement"]]
        assert q["calls"] == len(durations)
        assert q["max"] == max(durations)
        assert q["p95"] == pytest.approx(quantiles(durations)["p95"])


def test_obs_report_command_prints_the_same_figures_as_json_and_as_tables(
    store, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = store
    assert main(["report", "--store", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    s = Store(path)
    direct = figures(s, Filters())
    s.close()
    assert printed == json.loads(json.dumps(direct))
    out = io.StringIO()
    report(str(path), Filters(), out)
    text = out.getvalue()
    assert "Requests by route" in text and "AI calls by provider and model" in text
    for r in direct["routes"]:
        assert f"{r['method']} {r['route']}" in text
        assert f"{r['p95']:,.2f}" in text


def test_report_on_a_missing_store_exits_1_with_a_hint(tmp_path: Path, capsys) -> None:
    assert main(["report", "--store", str(tmp_path / "none.db")]) == 1
    assert "run `obs demo` to make one" in capsys.readouterr().err


def test_since_parses_durations_and_rejects_others() -> None:
    assert parse_since("15m", now_s=1000.0) == 100_000_000
    assert parse_since(None) is None
    with pytest.raises(ValueError, match="duration"):
        parse_since("yesterday")


def test_render_shows_none_for_empty_sections() -> None:
    empty = {
        k: []
        for k in (
            "routes",
            "slow_queries",
            "pools",
            "ai_by_model",
            "ai_latency",
            "ai_by_user",
            "ai_by_tier",
            "jobs",
            "dropped",
        )
    }
    text = render({**empty, "services": [], "first_us": None, "last_us": None}, "x.db")
    assert text.count("(none)") == 9


def test_render_tells_statements_apart_and_writes_small_costs_with_their_digits() -> None:
    empty = {k: [] for k in ("routes", "pools", "ai_by_model", "ai_latency", "jobs", "dropped")}
    columns = "SELECT users.id, users.email, users.name, users.created_at FROM users WHERE"
    timing = {"calls": 1, "p50": 1.0, "p95": 1.0, "max": 1.0, "location": None}
    queries = [{"statement": f"{columns} users.{c} = ?", **timing} for c in ("id", "email")]
    cost = {"calls": 1, "cost_usd": 3.6e-05}
    text = render(
        {
            **empty,
            "slow_queries": queries,
            "ai_by_user": [{"user": "u1", "tier": "pro", **cost}],
            "ai_by_tier": [{"tier": "pro", **cost}],
            "services": ["svc"],
            "first_us": None,
            "last_us": None,
        },
        "x.db",
    )
    assert "SELECT users.id, users.email…WHERE users.id = ?" in text
    assert "SELECT users.id, users.email…ERE users.email = ?" in text
    assert text.count("$0.000036") == 2 and "$0.0000 " not in text
