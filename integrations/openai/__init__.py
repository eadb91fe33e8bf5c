"""Compatibility suite: the OpenAI integration on the real ``openai`` SDK, unmocked, against
``obs_middleware.testing.emulators.openai`` on 127.0.0.1.

Verified with openai 3.54.0 (transport httpx2 2.16.2) on Python 3.11: chat completions,
responses, images, embeddings; sync, async, ``stream=True`` and the ``.stream()`` helpers.
"""
