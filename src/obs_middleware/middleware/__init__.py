"""HTTP server middleware: pure ASGI and WSGI, one server span per request."""

from .asgi import ObsMiddleware
from .wsgi import ObsWSGIMiddleware

__all__ = ["ObsMiddleware", "ObsWSGIMiddleware"]
