"""W2, the CRUD request: 5 SQLAlchemy core queries on in-memory SQLite, a 50-item JSON list.

``async def`` Starlette endpoint calling a sync engine directly (``StaticPool``: one connection,
no threadpool hop): a count, a 50-row page, a row by id, min/max/avg, 3 related rows.
Instrumentation that hooks engine creation (obs-middleware's ``instrument_all()``, dd-trace-py's
``patch(sqlalchemy=True)``) must be set up before ``make_engine()``.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy
from sqlalchemy.pool import StaticPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

PATH = "/categories/books/items"
CATEGORIES = ("books", "games", "music", "tools")
SPANS = 6  # spans per request when instrumented: the server span and 5 queries

meta = sqlalchemy.MetaData()
items = sqlalchemy.Table(
    "items",
    meta,
    sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True),
    sqlalchemy.Column("name", sqlalchemy.String(40)),
    sqlalchemy.Column("category", sqlalchemy.String(20)),
    sqlalchemy.Column("price", sqlalchemy.Float),
    sqlalchemy.Column("stock", sqlalchemy.Integer),
)


def make_engine() -> sqlalchemy.Engine:
    """An in-memory SQLite engine (``StaticPool``) holding 240 items."""
    engine = sqlalchemy.create_engine(
        "sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False}
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            items.insert(),
            [
                {
                    "id": i,
                    "name": f"item-{i}",
                    "category": CATEGORIES[i % len(CATEGORIES)],
                    "price": round(1 + (i * 7919 % 1000) / 10, 2),
                    "stock": i % 17,
                }
                for i in range(1, 241)
            ],
        )
    return engine


c = items.c
_cat: sqlalchemy.BindParameter[str] = sqlalchemy.bindparam("cat")
Q_COUNT = sqlalchemy.select(sqlalchemy.func.count()).where(c.category == _cat)
Q_PAGE = (
    sqlalchemy.select(c.id, c.name, c.price, c.stock)
    .where(c.category == _cat)
    .order_by(c.id)
    .limit(50)
)
Q_ONE = sqlalchemy.select(items).where(c.id == sqlalchemy.bindparam("id"))
Q_STATS = sqlalchemy.select(
    sqlalchemy.func.min(c.price), sqlalchemy.func.max(c.price), sqlalchemy.func.avg(c.price)
).where(c.category == _cat)
Q_RELATED = (
    sqlalchemy.select(c.id, c.name)
    .where(c.category == _cat, c.id != sqlalchemy.bindparam("id"))
    .order_by(c.stock.desc())
    .limit(3)
)


def build_app(engine: sqlalchemy.Engine) -> Starlette:
    """The bare app over ``engine`` (from ``make_engine()``)."""

    async def list_items(request: Request) -> JSONResponse:
        category = request.path_params["category"]
        with engine.connect() as conn:
            total = conn.execute(Q_COUNT, {"cat": category}).scalar_one()
            rows = conn.execute(Q_PAGE, {"cat": category}).all()
            featured = conn.execute(Q_ONE, {"id": rows[0].id}).one()
            low, high, _avg = conn.execute(Q_STATS, {"cat": category}).one()
            related = conn.execute(Q_RELATED, {"cat": category, "id": featured.id}).all()
        return JSONResponse(
            [
                {
                    "id": r.id,
                    "name": r.name,
                    "price": r.price,
                    "stock": r.stock,
                    "category": category,
                    "featured": r.id == featured.id,
                    "cheapest": r.price == low,
                }
                for r in rows
            ],
            headers={"x-total": str(total), "x-related": str(len(related)), "x-max": str(high)},
        )

    return Starlette(routes=[Route("/categories/{category}/items", list_items)])


def new_app(emulator_url: str = "") -> tuple[Starlette, sqlalchemy.Engine]:
    """A fresh bare app over a fresh engine: the A/B's entry point."""
    engine = make_engine()
    return build_app(engine), engine


REQUEST: dict[str, Any] = {"path": PATH}  # Driver keyword arguments


def check(body: bytes) -> None:
    """The answer to ``PATH``: 50 items."""
    data: Any = json.loads(body)
    assert isinstance(data, list) and len(data) == 50, body[:200]
