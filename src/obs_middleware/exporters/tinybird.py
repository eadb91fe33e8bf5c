"""Tinybird Events API exporter.

Rows are the unified record (docs/ARCHITECTURE.md) as columns (``_rows``: ``row``, ``COLUMNS``),
built straight from the pipeline's finished spans. The shipped schema is
``assets/tinybird/datasources/obs_events.datasource``; the analysis pipes are beside it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import urlencode

import orjson

from .._core.metrics import dropped
from .._delivery import DeliveryOptions, Outcome, Result, classify_status
from ._columns import ColumnExporter, asset_path
from ._rows import COLUMNS, Row, encode_rows, row
from .http import HttpTransport

__all__ = ["COLUMNS", "TinybirdExporter", "asset_path", "row"]


class TinybirdExporter(ColumnExporter):
    """Send records to a Tinybird datasource through the Events API, as NDJSON batches.

    ``token``: a token with ``DATASOURCE:APPEND`` on the datasource (default ``TB_TOKEN``).
    ``host``: the workspace's regional API host (default ``TB_HOST``, else
    ``https://api.tinybird.co``). ``datasource``: create it from the shipped
    ``obs_events.datasource`` first. ``wait``: ``True`` waits for the database to acknowledge
    each write (safer retries, slower). Bodies are gzip-compressed; a batch over
    ``max_request_bytes`` (Tinybird's 10 MB limit on free plans) is split. 429 answers are
    retried after their ``Retry-After``; rows the API quarantines are counted in ``obs.dropped``
    (reason ``quarantined:tinybird``) and stay inspectable in the ``<datasource>_quarantine``
    table. Requests time out after 5 s by default (``DeliveryOptions``).
    """

    name = "tinybird"

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str | None = None,
        datasource: str = "obs_events",
        wait: bool = False,
        compress: bool = True,
        max_request_bytes: int = 10 * 1000 * 1000,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        token = token or os.environ.get("TB_TOKEN")
        if not token:
            raise ValueError("TinybirdExporter needs a token (argument or TB_TOKEN)")
        host = host or os.environ.get("TB_HOST") or "https://api.tinybird.co"
        transport = HttpTransport(host, {"Authorization": f"Bearer {token}"})
        query = urlencode({"name": datasource, "wait": "true" if wait else "false"})
        self.path = f"/v0/events?{query}"
        self.max_request_bytes = max_request_bytes
        self.quarantined = 0
        super().__init__(transport, compress=compress, delivery=delivery)

    def send(self, rows: Sequence[Row], timeout: float) -> Result:
        """One Events API request for ``rows`` (called by the delivery layer)."""
        body = encode_rows(rows)
        if len(body) > self.max_request_bytes:
            return classify_status(413)
        response = self._post(body, timeout)
        result = response.result()
        if result.outcome is Outcome.OK:
            self._count_quarantined(response.body)
        return result

    def _count_quarantined(self, body: bytes) -> None:
        try:
            quarantined = int(orjson.loads(body).get("quarantined_rows") or 0)
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return
        if quarantined:
            self.quarantined += quarantined
            dropped.add((f"quarantined:{self.name}",), quarantined)


def from_spec(arg: str) -> TinybirdExporter:
    """``tinybird`` or ``tinybird:<datasource>`` (token and host from ``TB_TOKEN``/``TB_HOST``)."""
    return TinybirdExporter(datasource=arg or "obs_events")
