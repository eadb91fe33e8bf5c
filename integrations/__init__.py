"""Compatibility suites, one package per library (``integrations.starlette``...).

This file makes each suite folder a subpackage of ``integrations`` so that, under
``--import-mode=importlib``, ``integrations/starlette`` is never imported as ``starlette``.
"""
