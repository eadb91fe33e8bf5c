"""Privacy property: secrets of every known shape, planted wherever an application can put them,
reach no exporter's output.

One run drives a Starlette app (ASGI middleware) and a Flask app (WSGI middleware) whose handlers
log, query SQLite through SQLAlchemy, call out with requests and httpx, call the OpenAI SDK (the
local emulator) and raise; requests carry credential headers and query values. Everything is
exported at once through jsonl, memory, sqlite, console, the HTTP exporter and the OTLP and
ClickHouse exporters (both against a loopback receiver that keeps the bodies), and the Tinybird
exporter (against its emulator). Then every output is searched as raw bytes for every secret.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import flask
import httpx
import openai
import pytest
import requests
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import obs_middleware as obs
from obs_middleware._core.config import HttpOptions
from obs_middleware.exporters import ConsoleExporter, JsonlExporter, MemoryExporter
from obs_middleware.exporters.clickhouse import ClickHouseExporter
from obs_middleware.exporters.http import HttpExporter
from obs_middleware.exporters.otlp import OTLPExporter
from obs_middleware.exporters.sqlite import SqliteExporter
from obs_middleware.exporters.tinybird import TinybirdExporter
from obs_middleware.integrations import httpx as obs_httpx
from obs_middleware.integrations import logging as obs_logging
from obs_middleware.integrations import openai as obs_openai
from obs_middleware.integrations import requests as obs_requests
from obs_middleware.integrations import sqlalchemy as obs_sqlalchemy
from obs_middleware.logs import SpanEventHandler
from obs_middleware.middleware import ObsMiddleware, ObsWSGIMiddleware
from obs_middleware.testing.emulators.openai import OpenAIEmulator, error_body
from obs_middleware.testing.emulators.tinybird import TinybirdEmulator

# name -> (the text planted, what must never be found: the secret part of it)
SHAPES: dict[str, tuple[str, str]] = {
    "bearer": ("Bearer Qv7BearerTok0123", "Qv7BearerTok0123"),
    "basic": ("Basic UXY3QmFzaWNDcmVkMDEy", "UXY3QmFzaWNDcmVkMDEy"),
    "openai": ("sk-proj-Qv7OpenAiKey0123456789", "Qv7OpenAiKey0123456789"),
    "anthropic": ("sk-ant-api03-Qv7AnthropicKey0123", "Qv7AnthropicKey0123"),
    "replicate": ("r8_Qv7ReplicateKey0123456789", "Qv7ReplicateKey0123456789"),
    "jwt": ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJxdjcifQ.Qv7JwtSignature0123", "Qv7JwtSignature0123"),
    "fal": (
        "1b4e28ba-2fa1-11d2-883f-0016d3cca427:9f8e7d6c5b4a39281706f5e4d3c2b1a0",
        "9f8e7d6c5b4a39281706f5e4d3c2b1a0",
    ),
    "modal id": ("ak-Qv7ModalTokenId0123", "Qv7ModalTokenId0123"),
    "modal secret": ("as-Qv7ModalSecret01234", "Qv7ModalSecret01234"),
    "aws id": ("AKIAQV7AWSKEYID01234", "QV7AWSKEYID01234"),
    "aws session id": ("ASIAQV7AWSSTSID01234", "QV7AWSSTSID01234"),
    "aws secret": ("aws_secret_access_key=Qv7AwsSecretAccess0123", "Qv7AwsSecretAccess0123"),
    "github": ("ghp_Qv7GithubToken0123456789abcdefghij", "Qv7GithubToken0123456789"),
    "github pat": ("github_pat_Qv7GithubPat0123456789_abcdef", "Qv7GithubPat0123456789"),
    "stripe": ("sk_live_Qv7StripeKey0123456789", "Qv7StripeKey0123456789"),
    "stripe restricted": ("rk_live_Qv7StripeRk0123456789", "Qv7StripeRk0123456789"),
    "slack": ("xoxb-123456789012-Qv7SlackToken01", "Qv7SlackToken01"),
    "google": ("AIzaQv7GoogleKey0123456789abcdefghijklm", "Qv7GoogleKey0123456789"),
    "key=value": ("password=Qv7PasswordKv", "Qv7PasswordKv"),
    "dict repr": ("{'password': 'Qv7QuotedPw', 'user': 'ann'}", "Qv7QuotedPw"),
    "json": ('{"api_key": "Qv7JsonApiKey"}', "Qv7JsonApiKey"),
    "token scheme": ("Authorization: Token Qv7DrfToken0123", "Qv7DrfToken0123"),
    "url credentials": ("postgresql://app:Qv7UrlPassword@db.example:5432/app", "Qv7UrlPassword"),
    "url query": ("https://cb.example/done?code=Qv7QueryInText&state=1", "Qv7QueryInText"),
}
SECRET_TEXT = " | ".join(planted for planted, _ in SHAPES.values())
# Shapes that fit in a URL path segment: requested as /reset/<secret> (a route) and /x/<secret>.
PATH_SECRETS = tuple(
    SHAPES[name][0]
    for name in ("openai", "replicate", "jwt", "aws id", "github", "stripe", "slack", "google")
)
QUERY_VALUE = "Qv7QueryValue"  # sent as a query value by the app and by its HTTP clients
SQL_LITERAL = "Qv7SqlLiteral"
SQL_PARAM = "Qv7SqlParam"
PRIVATE_PROMPT = "Qv7PrivatePrompt about my diary"
HEADERS = {
    "Authorization": "Bearer Qv7HeaderBearer0123",
    "Cookie": "session=Qv7CookieSession",
    "X-Api-Key": "Qv7XApiKey0123",
    "X-Note": "key sk-Qv7HeaderNoteKey0123456",  # captured (not a credential header): scrubbed
}
NEEDLES = {
    **{name: needle for name, (_, needle) in SHAPES.items()},
    "query value": QUERY_VALUE,
    "sql literal": SQL_LITERAL,
    "sql parameter": SQL_PARAM,
    "private prompt": "Qv7PrivatePrompt",
    "authorization header": "Qv7HeaderBearer0123",
    "cookie header": "Qv7CookieSession",
    "x-api-key header": "Qv7XApiKey0123",
    "captured header": "Qv7HeaderNoteKey0123456",
    "openai client key": "Qv7ClientKey0123456789",
}
OPENAI_KEY = "sk-proj-Qv7ClientKey0123456789"
ERROR_TYPES = (b"RuntimeError", b"ValueError", b"IntegrityError", b"OperationalError")
ERROR_TYPES += (b"ConnectionError", b"HTTPStatusError", b"BadRequestError")
CLEANED = (b"[REDACTED]", b"[PRIVATE]")  # the console prints no message
assert len(SHAPES["google"][0]) == 39  # AIza + 35


class _Receiver(BaseHTTPRequestHandler):
    """Keeps every POST body (decompressed) and answers 200."""

    protocol_version = "HTTP/1.1"
    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # the app's own upstream: fails
        self.send_response(500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    bodies: list[tuple[str, bytes]] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", bodies
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


@pytest.fixture
def instrumented() -> Iterator[None]:
    patches = (obs_requests, obs_httpx, obs_openai, obs_logging)
    for module in patches:
        module.patch()
    handler = SpanEventHandler()
    logging.getLogger().addHandler(handler)
    yield
    logging.getLogger().removeHandler(handler)
    for module in patches:
        module.unpatch()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _database() -> sa.Engine:
    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    obs.instrument_sqlalchemy(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE users (email TEXT UNIQUE, pw TEXT)"))
        conn.execute(sa.text("INSERT INTO users VALUES ('taken@example.com', 'x')"))
    return engine


def _query(engine: sa.Engine, what: str) -> None:
    """Statements that carry a literal and a parameter, then one that fails with them."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"SELECT :p AS a, '{SQL_LITERAL}' AS b"), {"p": SQL_PARAM})
        if what == "duplicate":
            insert = sa.text("INSERT INTO users VALUES (:e, :p)")
            conn.execute(insert, {"e": "taken@example.com", "p": SQL_PARAM})
        else:
            conn.execute(sa.text(f"SELECT * FROM missing WHERE pw = '{SQL_LITERAL}'"))


def _starlette_app(engine: sa.Engine, upstream: str, ai: OpenAIEmulator) -> Any:
    log = logging.getLogger("app.asgi")

    async def log_and_raise(request: Request) -> Response:
        log.warning("calling upstream with %s", SECRET_TEXT)
        raise RuntimeError(f"upstream refused: {SECRET_TEXT}")

    def database(request: Request) -> Response:
        _query(engine, request.query_params["what"])
        return Response("unreachable")

    def sync_client(request: Request) -> Response:
        url = f"http://127.0.0.1:{_closed_port()}/profile"
        requests.get(url, params={"email": QUERY_VALUE}, timeout=5)  # ConnectionError
        return Response("unreachable")

    async def async_client(request: Request) -> Response:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{upstream}/profile", params={"email": QUERY_VALUE})
            answer.raise_for_status()  # HTTPStatusError, its message holds the URL
        return Response("unreachable")

    def ai_call(request: Request) -> Response:
        private = request.query_params.get("private") == "1"
        if private:
            obs.mark_private()
        prompt = PRIVATE_PROMPT if private else f"summarise {SECRET_TEXT}"
        ai.fail("/chat/completions", 400, error_body(f"refused: {prompt}"))
        messages = [{"role": "user", "content": prompt}]
        with openai.OpenAI(api_key=OPENAI_KEY, base_url=ai.url + "/v1", max_retries=0) as sdk:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, user="u1")
            log.warning("model answered for prompt %r", prompt)
            sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)  # raises
        return Response("unreachable")

    routes = [
        Route("/raise", log_and_raise),
        Route("/db", database),
        Route("/requests", sync_client),
        Route("/httpx", async_client),
        Route("/ai", ai_call),
        Route("/reset/{token}", lambda request: Response("ok")),
    ]
    options = HttpOptions(capture_headers=tuple(h.lower() for h in HEADERS))
    return ObsMiddleware(Starlette(routes=routes), options=options)


def _flask_app(engine: sa.Engine) -> flask.Flask:
    app = flask.Flask(__name__)
    log = logging.getLogger("app.wsgi")

    @app.get("/raise")
    def log_and_raise() -> str:
        log.error("payment failed for %s", SECRET_TEXT)
        raise ValueError(f"gateway said: {SECRET_TEXT}")

    @app.get("/db")
    def database() -> str:
        _query(engine, flask.request.args["what"])
        return "unreachable"

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "ok"

    options = HttpOptions(capture_headers=tuple(h.lower() for h in HEADERS))
    app.wsgi_app = ObsWSGIMiddleware(app.wsgi_app, options=options)  # type: ignore[method-assign]
    return app


async def _drive(engine: sa.Engine, upstream: str, ai: OpenAIEmulator) -> None:
    query = {"email": QUERY_VALUE, "token": QUERY_VALUE}
    app = _starlette_app(engine, upstream, ai)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        for path in ("/raise", "/db?what=duplicate", "/db?what=missing", "/requests", "/httpx"):
            response = await client.get(path, params=query, headers=HEADERS)
            assert response.status_code == 500, path
        for private in ("0", "1"):
            response = await client.get("/ai", params={**query, "private": private})
            assert response.status_code == 500
        for secret in PATH_SECRETS:
            assert (await client.get(f"/reset/{secret}")).status_code == 200
            assert (await client.get(f"/x/{secret}")).status_code == 404
    flask_client = _flask_app(engine).test_client()
    for path in ("/raise", "/db?what=duplicate", "/db?what=missing"):
        url = f"{path}{'&' if '?' in path else '?'}email={QUERY_VALUE}"
        with flask_client.get(url, headers=HEADERS) as response:  # closing ends the span
            assert response.status_code == 500, path
    for secret in PATH_SECRETS:
        with flask_client.get(f"/reset/{secret}") as response:
            assert response.status_code == 200
        with flask_client.get(f"/x/{secret}") as response:
            assert response.status_code == 404


async def test_no_planted_secret_reaches_any_exporter(
    configured: Any,
    instrumented: None,
    receiver: tuple[str, list[tuple[str, bytes]]],
    tmp_path: Path,
) -> None:
    url, bodies = receiver
    console = io.StringIO()
    memory = MemoryExporter()
    with OpenAIEmulator() as ai, TinybirdEmulator() as tinybird:
        configured(
            exporters=[
                JsonlExporter(tmp_path / "out.jsonl"),
                memory,
                SqliteExporter(tmp_path / "obs.db"),
                ConsoleExporter(console),
                HttpExporter(f"{url}/http", gzip=True),
                OTLPExporter(f"{url}/otlp", metrics_interval_s=0.0),
                ClickHouseExporter(f"{url}/clickhouse"),
                TinybirdExporter(token="test-token", host=tinybird.url),
            ],
            logs="warning",  # the handlers' warnings are exported as log events too
        )
        engine = _database()
        try:
            await _drive(engine, url, ai)
        finally:
            obs_sqlalchemy.uninstrument_sqlalchemy(engine)
            engine.dispose()
        assert obs.flush(15.0)
        assert obs.shutdown(15.0)
        tinybird_rows = tinybird.rows("obs_events") + tinybird.quarantine("obs_events")

    outputs: dict[str, bytes] = {
        "jsonl": (tmp_path / "out.jsonl").read_bytes(),
        "memory": json.dumps(memory.records, default=str, ensure_ascii=False).encode(),
        "sqlite": b"".join(p.read_bytes() for p in tmp_path.glob("obs.db*")),
        "console": console.getvalue().encode(),
        "tinybird": json.dumps(tinybird_rows, default=str, ensure_ascii=False).encode(),
    }
    for name, prefix in (("http", "/http"), ("otlp", "/otlp"), ("clickhouse", "/clickhouse")):
        outputs[name] = b"\n".join(body for path, body in bodies if path.startswith(prefix))

    # The run happened and reached every output: each kind of failure, cleaned and private text.
    names = {r["name"] for r in memory.records}
    assert {"GET /raise", "GET /db", "GET /requests", "GET /httpx", "GET /ai", "log"} <= names
    for output, data in outputs.items():
        for marker in (*ERROR_TYPES, *([] if output == "console" else CLEANED)):
            assert marker in data, f"{output} lacks {marker!r}"

    leaks = [
        f"{secret} in {output}: …{data[max(i - 80, 0) : i + 40]!r}…"
        for output, data in outputs.items()
        for secret, needle in NEEDLES.items()
        if (i := data.find(needle.encode())) >= 0
    ]
    assert not leaks, "\n".join(leaks)
