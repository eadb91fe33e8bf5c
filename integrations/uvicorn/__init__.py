"""A graceful stop loses no span: SIGTERM to uvicorn (lifespan flush) and to a plain process.

Verified with uvicorn 0.54, starlette 1.10, Python 3.11.
"""
