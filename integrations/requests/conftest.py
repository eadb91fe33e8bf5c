"""The downstream service and upstream jsonl export of the httpx suite, shared."""

from __future__ import annotations

from ..httpx.conftest import Downstream, downstream, free_port, read_jsonl, upstream_jsonl

__all__ = ["Downstream", "downstream", "free_port", "read_jsonl", "upstream_jsonl"]
