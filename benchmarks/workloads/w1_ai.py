"""W1, the AI request: API-key lookup, an OpenAI chat completion, a usage row, a JSON answer.

``POST /v1/ask`` with ``Authorization: Bearer <key>`` and ``{"prompt": ...}``: the key is looked up
with SQLAlchemy, the real ``openai`` SDK's async client calls ``chat.completions.create`` against
``obs_middleware.testing.emulators.openai`` running in another process (``_emulator``: its CPU
is not charged), the usage is inserted as a row, and the answer returned as JSON. The database is
in-memory SQLite (``StaticPool``: one connection, no file system noise), a sync engine called
directly from the ``async def`` endpoint (no threadpool hop), as in W2. Instrumentation that
hooks engine creation must be set up before ``make_engine()``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import sqlalchemy
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/v1/ask"
METHOD = "POST"
KEY = "sk-user-0007"
HEADERS = [
    (b"authorization", f"Bearer {KEY}".encode()),
    (b"content-type", b"application/json"),
]
BODY = b'{"prompt": "Say hello."}'
MODEL = "gpt-4o-mini"
USERS = 50

meta = sqlalchemy.MetaData()
api_keys = sqlalchemy.Table(
    "api_keys",
    meta,
    sqlalchemy.Column("key", sqlalchemy.String(40), primary_key=True),
    sqlalchemy.Column("user_id", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("tier", sqlalchemy.String(10), nullable=False),
)
usage = sqlalchemy.Table(
    "usage",
    meta,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("user_id", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("model", sqlalchemy.String(40), nullable=False),
    sqlalchemy.Column("prompt_tokens", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("completion_tokens", sqlalchemy.Integer, nullable=False),
    sqlalchemy.Column("created", sqlalchemy.Float, nullable=False),
)
Q_KEY = sqlalchemy.select(api_keys.c.user_id, api_keys.c.tier).where(
    api_keys.c.key == sqlalchemy.bindparam("key")
)
INSERT_USAGE = usage.insert()


def make_engine() -> sqlalchemy.Engine:
    """An in-memory SQLite engine (``StaticPool``) holding ``USERS`` API keys."""
    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            api_keys.insert(),
            [
                {"key": f"sk-user-{i:04d}", "user_id": i, "tier": ("free", "pro")[i % 2]}
                for i in range(USERS)
            ],
        )
    return engine


def make_client(emulator_url: str) -> openai.AsyncOpenAI:
    """The SDK's async client pointed at the emulator (no retries: a failure must show)."""
    return openai.AsyncOpenAI(api_key="sk-test", base_url=emulator_url + "/v1", max_retries=0)


def build_app(engine: sqlalchemy.Engine, client: openai.AsyncOpenAI) -> Starlette:
    """The bare app over ``engine`` (from ``make_engine()``) and ``client``."""
    create = client.chat.completions.create

    async def ask(request: Request) -> JSONResponse:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        with engine.connect() as conn:
            user = conn.execute(Q_KEY, {"key": key}).one_or_none()
        if user is None:
            return JSONResponse({"error": "unknown API key"}, status_code=401)
        payload = await request.json()
        reply = await create(model=MODEL, messages=[{"role": "user", "content": payload["prompt"]}])
        tokens = reply.usage
        assert tokens is not None
        with engine.begin() as conn:
            conn.execute(
                INSERT_USAGE,
                {
                    "user_id": user.user_id,
                    "model": reply.model,
                    "prompt_tokens": tokens.prompt_tokens,
                    "completion_tokens": tokens.completion_tokens,
                    "created": time.time(),
                },
            )
        return JSONResponse(
            {
                "answer": reply.choices[0].message.content,
                "model": reply.model,
                "tokens": tokens.total_tokens,
                "tier": user.tier,
            }
        )

    return Starlette(routes=[Route(PATH, ask, methods=["POST"])])


def new_app(emulator_url: str = "") -> tuple[Starlette, sqlalchemy.Engine]:
    """A fresh bare app over a fresh engine and SDK client: the A/B's entry point."""
    engine = make_engine()
    return build_app(engine, make_client(emulator_url)), engine


REQUEST: dict[str, Any] = {"path": PATH, "headers": HEADERS, "method": METHOD, "body": BODY}


def check(body: bytes) -> None:
    """The answer to one request: the emulator's reply and the user's tier."""
    data: Any = json.loads(body)
    assert data.get("answer") and data.get("tier") == "pro", body[:200]
