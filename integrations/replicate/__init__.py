"""Compatibility suite: the Replicate integration on the real ``replicate`` SDK, unmocked, against
``obs_middleware.testing.emulators.replicate`` on 127.0.0.1.

Verified with replicate 1.0.7 (httpx 0.28.1) on Python 3.11: run/async_run (plain and
iterator outputs), stream/async_stream (SSE), predictions/models/deployments ``create``,
``Prediction.wait``, failed predictions and HTTP errors.
"""
