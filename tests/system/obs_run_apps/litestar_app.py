"""``obs run -- uvicorn litestar_app:app``: a Litestar app, no obs import."""

from __future__ import annotations

from litestar import Litestar, get


@get("/books/{book_id:int}")
async def book(book_id: int) -> dict[str, int]:
    return {"book": book_id}


app = Litestar(route_handlers=[book])
