"""``obs dashboard``: a local web page over the SQLite store (needs the ``[dashboard]`` extra).

``create_app(store_path)`` is a Starlette app: JSON endpoints under ``/api`` and one static page
that draws its charts as inline SVG (no CDN, works offline). ``serve()`` runs it with uvicorn on
127.0.0.1; another address needs ``allow_remote=True`` (the page shows prompts, user ids and
errors to anyone who reaches it, with no authentication).
"""

from .app import create_app, is_loopback, serve

__all__ = ["create_app", "is_loopback", "serve"]
