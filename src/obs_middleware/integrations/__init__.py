"""Integrations with third-party libraries, patched through ``obs_middleware.instrument_all()``."""
