"""Compatibility suite: ObsWSGIMiddleware wrapping a real Flask app's ``wsgi_app``.

Verified with flask 3.1.3 and werkzeug 3.1.9 (Flask's test client) on Python 3.11. The route
template is copied from ``request.url_rule`` by a ``request_started`` signal handler.
"""
