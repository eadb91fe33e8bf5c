"""A FastAPI service with no obs_middleware import: ``obs run`` instruments it (test_obs_run.py).

``APP_DB``: a SQLite file with a ``users`` table; ``APP_OPENAI_URL``: the OpenAI emulator.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import openai
from fastapi import FastAPI
from sqlalchemy import create_engine, text

engine = create_engine(f"sqlite:///{os.environ['APP_DB']}")
ai = openai.OpenAI(api_key="sk-test", base_url=os.environ["APP_OPENAI_URL"], max_retries=0)
app = FastAPI()


@app.get("/users/{user_id}")
async def user(user_id: int) -> dict[str, Any]:
    # Blocking on purpose: a busy worker leaves the next connection to another worker.
    time.sleep(0.02)
    with engine.connect() as conn:
        query = text("SELECT name FROM users WHERE id = :id")
        name = conn.execute(query, {"id": user_id}).scalar()
    reply = ai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": f"greet {name}"}]
    )
    logging.getLogger("app.users").warning("slow user lookup for %s", user_id)
    return {"name": name, "reply": reply.choices[0].message.content, "pid": os.getpid()}
