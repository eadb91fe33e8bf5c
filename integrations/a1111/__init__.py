"""Compatibility suite: the AUTOMATIC1111 integration on the real ``webuiapi`` client, unmocked,
against ``obs_middleware.testing.emulators.a1111`` on 127.0.0.1.

Verified with webuiapi 0.9.17 (requests 2.32, aiohttp 3) on Python 3.11: txt2img, img2img and
extra-single-image, sync and ``use_async=True``, the webui's 422 and a refused connection.
"""
