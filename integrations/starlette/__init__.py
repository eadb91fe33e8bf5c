"""Compatibility suite: ObsMiddleware on real Starlette apps.

Verified with starlette 1.10.0, httpx 0.28.1 (``httpx.ASGITransport``) and asgiref 3.13.0 on
Python 3.11. Starlette ≥ 0.33 stores the matched route in ``scope["route"]``, which the route
template is read from.
"""
