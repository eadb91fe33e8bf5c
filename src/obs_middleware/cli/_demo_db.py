"""The demo service's database: SQLAlchemy on a SQLite file, with a pool worth watching.

A small ``QueuePool`` (so pool gauges move under load), WAL, writes serialised by a lock (SQLite
allows one writer: waiting on a lock is faster than its busy-retry sleeps), and a ``vector_probe()``
SQL function standing in for an embedding index lookup: the "semantic search" query it sits in is
the demo's slow query.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    func,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

__all__ = ["Chat", "Database", "Image", "Job", "User"]


class Base(DeclarativeBase):
    """Declarative base of the demo tables."""


class User(Base):
    """A customer with a pricing tier."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tier: Mapped[str] = mapped_column(String(16))


class Image(Base):
    """A generated image."""

    __tablename__ = "images"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    prompt: Mapped[str] = mapped_column(String(500))
    model: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=dt.datetime.utcnow)


class Chat(Base):
    """One chat completion and its token usage."""

    __tablename__ = "chats"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    model: Mapped[str] = mapped_column(String(64))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=dt.datetime.utcnow)


class Job(Base):
    """A background upscale job."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    state: Mapped[str] = mapped_column(String(16), default="queued")


def _vector_probe(query: str | None) -> int:
    # Deterministic with a constant argument: SQLite evaluates it once per statement.
    time.sleep(0.08 + zlib.crc32((query or "").encode()) % 150 / 1000)
    return 1


def _similarity(text: str | None, query: str | None) -> float:
    words = set((query or "").lower().split())
    return float(len(words & set((text or "").lower().split())))


class Database:
    """The engine and the queries the routes run (sync; routes call them in a thread)."""

    def __init__(self, directory: str, users: list[tuple[str, str]]) -> None:
        self.path = os.path.join(directory, "demo-app.db")
        self.engine: Engine = create_engine(
            f"sqlite:///{self.path}",
            pool_size=4,
            max_overflow=2,
            pool_timeout=30,
            pool_logging_name="demo-app",
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(self.engine, "connect", _on_connect)
        self._write_lock = threading.Lock()
        Base.metadata.create_all(self.engine)
        with self._writing() as s:
            s.add_all(User(id=u, tier=t) for u, t in users)
            s.add_all(
                Image(owner_id=users[i % len(users)][0], prompt=p, model="sdxl")
                for i, p in enumerate(_SEED_PROMPTS * 30)
            )

    @contextmanager
    def _writing(self) -> Iterator[Session]:
        with self._write_lock, Session(self.engine) as session, session.begin():
            yield session

    def add_image(self, owner: str, prompt: str, model: str, url: str | None) -> int:
        """Insert an image; returns its id."""
        with self._writing() as s:
            image = Image(owner_id=owner, prompt=prompt, model=model, url=url)
            s.add(image)
            s.flush()
            return image.id

    def get_image(self, image_id: int) -> dict[str, Any] | None:
        """One image by id."""
        with Session(self.engine) as s:
            image = s.get(Image, image_id)
            if image is None:
                return None
            return {"id": image.id, "prompt": image.prompt, "model": image.model}

    def recent_images(self, owner: str, limit: int = 20) -> list[int]:
        """Return the ids of the owner's latest images."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(Image.id)
                .where(Image.owner_id == owner)
                .order_by(Image.created_at.desc())
                .limit(limit)
            )
            return [r[0] for r in rows]

    def search(self, query: str) -> list[int]:
        """Rank every prompt by similarity to ``query`` (the slow query)."""
        with Session(self.engine) as s:
            score = func.similarity(Image.prompt, query)
            rows = s.execute(
                select(Image.id)
                .where(func.vector_probe(query) == 1)
                .order_by(score.desc())
                .limit(10)
            )
            return [r[0] for r in rows]

    def add_chat(self, user: str, model: str, input_tokens: int, output_tokens: int) -> None:
        """Record a chat completion's usage."""
        with self._writing() as s:
            s.add(
                Chat(
                    user_id=user,
                    model=model,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                )
            )

    def usage(self, user: str) -> dict[str, int]:
        """Tokens used per model by one user."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(Chat.model, func.sum(Chat.input_tokens + Chat.output_tokens))
                .where(Chat.user_id == user)
                .group_by(Chat.model)
            )
            return {model: int(total or 0) for model, total in rows}

    def add_job(self, image_id: int) -> int:
        """Queue an upscale job; returns its id."""
        with self._writing() as s:
            job = Job(image_id=image_id)
            s.add(job)
            s.flush()
            return job.id

    def set_job_state(self, job_id: int, state: str) -> None:
        """Move a job to ``state``."""
        with self._writing() as s:
            s.execute(update(Job).where(Job.id == job_id).values(state=state))

    def close(self) -> None:
        """Dispose of the pool."""
        self.engine.dispose()


def _on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")
    dbapi_connection.create_function("similarity", 2, _similarity, deterministic=True)
    dbapi_connection.create_function("vector_probe", 1, _vector_probe, deterministic=True)


_SEED_PROMPTS = [
    "a lighthouse at dusk, oil painting",
    "a red fox in fresh snow",
    "isometric city block at night, neon",
    "a bowl of ramen, studio lighting",
    "portrait of an astronaut, film grain",
    "watercolor map of an imaginary island",
    "a cat wearing a tiny wizard hat",
    "brutalist library interior, morning light",
    "macro photo of a dew drop on a leaf",
    "a sailing ship in a bottle",
]
