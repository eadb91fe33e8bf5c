"""What the column-store exporters (Tinybird, ClickHouse) share: rows posted as NDJSON.

Both send the rows of ``_rows`` (built from records, or straight from finished spans on the
pipeline's column-store path) through one ``HttpTransport`` with a ``Delivery``; they differ in
where they post and how they read the answer (``send``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources

from .._core.span import Event, Span
from .._delivery import DeliveryOptions
from .._record import Record, Resource
from ._rows import row, span_rows
from .http import HttpTransport, PostingExporter

__all__ = ["ColumnExporter", "asset_path"]


def asset_path(*parts: str) -> str:
    """Filesystem path of a shipped asset (``asset_path("tinybird", "pipes")``)."""
    return str(resources.files("obs_middleware.exporters").joinpath("assets", *parts))


class ColumnExporter(PostingExporter):
    """Base of the column-store exporters: NDJSON rows, from records or from finished spans."""

    def __init__(
        self, transport: HttpTransport, *, compress: bool, delivery: DeliveryOptions | None
    ) -> None:
        super().__init__(transport, "application/x-ndjson", compress=compress, delivery=delivery)

    def export(self, records: Sequence[Record]) -> None:
        """Deliver one batch of records."""
        self.delivery.deliver([row(rec) for rec in records])

    def export_spans(self, items: Iterable[Span | Event], resource: Resource) -> None:
        """Deliver one batch of finished spans and events (the pipeline's column-store path)."""
        self.delivery.deliver(span_rows(items, resource, packed=True))
