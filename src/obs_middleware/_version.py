"""The installed package's version, read once from its metadata (pyproject.toml is the source)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("obs-middleware")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
