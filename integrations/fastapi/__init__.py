"""Compatibility suite: ObsMiddleware on real FastAPI apps (APIRoute, APIRouter prefixes).

Verified with fastapi 0.165.0 on starlette 1.10.0, httpx 0.28.1 (``httpx.ASGITransport``) and
Python 3.11. The route template comes from ``scope["route"]`` (an ``APIRoute``) and, for a router
included with a prefix, from FastAPI's effective route context.
"""
