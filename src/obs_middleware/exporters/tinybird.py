"""Tinybird Events API exporter.

Rows are the unified record (docs/ARCHITECTURE.md, *The record*) as columns (``_rows``: ``row``, ``COLUMNS``), built
straight from the pipeline's finished spans. The shipped schema is
``assets/tinybird/datasources/obs_events.datasource``; the analysis pipes are beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from importlib import resources
from urllib.parse import urlencode

import orjson

from .._core.metrics import dropped
from .._core.span import Event, Span
from .._delivery import Delivery, DeliveryOptions, Outcome, Result, classify_status
from .._record import Record, Resource
from ._rows import COLUMNS, Row, encode_rows, row, span_rows
from .http import HttpTransport, gzip

__all__ = ["COLUMNS", "TinybirdExporter", "asset_path", "row"]


def asset_path(*parts: str) -> str:
    """Filesystem path of a shipped asset (``asset_path("tinybird", "pipes")``)."""
    return str(resources.files("obs_middleware.exporters").joinpath("assets", *parts))


class TinybirdExporter:
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
        self.transport = HttpTransport(host, {"Authorization": f"Bearer {token}"})
        query = urlencode({"name": datasource, "wait": "true" if wait else "false"})
        self.path = f"/v0/events?{query}"
        self.compress = compress
        self.max_request_bytes = max_request_bytes
        self._headers = {"Content-Type": "application/x-ndjson"}
        if compress:
            self._headers["Content-Encoding"] = "gzip"
        options = delivery or DeliveryOptions.from_env(self.name)
        self.delivery = Delivery(self.name, self.send, options, interrupt=self.transport.abort)
        self.quarantined = 0

    def send(self, rows: Sequence[Row], timeout: float) -> Result:
        """One Events API request for ``rows`` (called by the delivery layer)."""
        body = encode_rows(rows)
        if len(body) > self.max_request_bytes:
            return classify_status(413)
        if self.compress:
            body = gzip(body)
        response = self.transport.post(self.path, body, self._headers, timeout)
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

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch of records."""
        self.delivery.deliver([row(rec) for rec in records])

    def export_spans(self, items: Iterable[Span | Event], resource: Resource) -> None:
        """Deliver one batch of finished spans and events (the pipeline's column-store path)."""
        self.delivery.deliver(span_rows(items, resource))

    def flush(self) -> None:
        """Replay anything spooled."""
        self.delivery.flush()

    def shutdown(self) -> None:
        """Seal the spool and close the connection."""
        self.delivery.close()
        self.transport.close()

    def after_fork(self) -> None:
        """In a forked child: its own connection and spool segment (the parent keeps its own)."""
        self.transport.after_fork()
        self.delivery.after_fork()


def from_spec(arg: str) -> TinybirdExporter:
    """``tinybird`` or ``tinybird:<datasource>`` (token and host from ``TB_TOKEN``/``TB_HOST``)."""
    return TinybirdExporter(datasource=arg or "obs_events")
