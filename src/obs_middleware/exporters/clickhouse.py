"""ClickHouse exporter: ``INSERT … FORMAT JSONEachRow`` over ClickHouse's HTTP interface.

For users who self-host what Tinybird runs: the same rows (``tinybird.row``, built from finished
spans as for Tinybird) into a table made by the shipped DDL (``assets/clickhouse/obs_events.sql``);
the shipped Tinybird pipes' SQL runs on it unchanged. Plain HTTP, no driver.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlencode

from .._delivery import DeliveryOptions, Outcome, Result, classify_status
from ._columns import ColumnExporter, asset_path
from ._rows import Row, encode_rows
from .http import HttpTransport

__all__ = ["ClickHouseExporter", "ddl", "pipe_queries", "views"]

# Server error codes worth retrying (overload, timeouts, network); any other code is a problem
# with the data or the table that the same request would hit again.
_TRANSIENT_CODES = frozenset({3, 159, 164, 202, 209, 210, 241, 252, 425})
_TOO_LARGE_CODES = frozenset({241})  # memory limit: a smaller batch may pass
_CODE = re.compile(rb"Code: (\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")


def ddl(table: str = "obs_events") -> str:
    """Return the shipped ``CREATE TABLE IF NOT EXISTS`` statement, for ``table``."""
    if not _IDENT.match(table):
        raise ValueError(f"invalid table name {table!r}")
    sql = Path(asset_path("clickhouse", "obs_events.sql")).read_text()
    return sql.replace(
        "CREATE TABLE IF NOT EXISTS obs_events", f"CREATE TABLE IF NOT EXISTS {table}"
    )


def views(table: str = "obs_events") -> list[str]:
    """Return the shipped ``CREATE VIEW IF NOT EXISTS`` statements of the text and image views
    (``obs_ai_text``, ``obs_ai_image``) over ``table``, one statement each; a ``table`` other
    than ``obs_events`` names the views ``<table>_ai_text`` and ``<table>_ai_image``."""
    if not _IDENT.match(table):
        raise ValueError(f"invalid table name {table!r}")
    sql = Path(asset_path("clickhouse", "obs_ai_views.sql")).read_text()
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    prefix = "obs" if table == "obs_events" else table
    body = body.replace("FROM obs_events", f"FROM {table}").replace(" obs_ai_", f" {prefix}_ai_")
    return [s.strip() for s in body.split(";") if s.strip()]


def pipe_queries() -> dict[str, str]:
    """Each shipped Tinybird pipe's SQL by node name (they run on ClickHouse as they are)."""
    queries: dict[str, str] = {}
    for path in sorted(Path(asset_path("tinybird", "pipes")).glob("*.pipe")):
        node = ""
        lines: list[str] | None = None
        for line in path.read_text().splitlines():
            if line.startswith("NODE "):
                node = line.split(None, 1)[1].strip()
            elif line.startswith("SQL >"):
                lines = []
            elif lines is not None:
                if line.strip() and not line.startswith("    "):
                    queries[node] = "\n".join(lines).strip()
                    lines = None
                else:
                    lines.append(line[4:])
        if lines is not None:
            queries[node] = "\n".join(lines).strip()
    return queries


class ClickHouseExporter(ColumnExporter):
    """Insert records into a ClickHouse table through its HTTP interface (port 8123).

    ``url``: ``http://host:8123`` (``https://user:password@host:8443`` for authentication).
    ``table``: ``[database.]table`` made with ``ddl()``; ``create_table=True`` runs it before
    the first insert. ``compress``: gzip request bodies (the server must allow it:
    ``enable_http_compression``). Data errors (unknown table, unparsable rows) are not
    retried: the batch is dropped and counted (``rejected:clickhouse``).
    """

    name = "clickhouse"

    def __init__(
        self,
        url: str = "http://127.0.0.1:8123",
        *,
        table: str = "obs_events",
        create_table: bool = False,
        compress: bool = False,
        delivery: DeliveryOptions | None = None,
    ) -> None:
        if not _IDENT.match(table):
            raise ValueError(f"invalid table name {table!r}")
        self.table = table
        self.url = url
        settings = {
            "date_time_input_format": "best_effort",  # RFC 3339 with µs and "Z"
            "input_format_skip_unknown_fields": "1",
        }
        self.path = "/?" + urlencode(
            {"query": f"INSERT INTO {table} FORMAT JSONEachRow", **settings}
        )
        self._create = create_table
        super().__init__(HttpTransport(url), compress=compress, delivery=delivery)

    def query(self, sql: str, timeout: float = 5.0) -> bytes:
        """Run one statement; returns the body (raises ``RuntimeError`` on a server error).

        Uses its own connection: safe to call from any thread.
        """
        transport = HttpTransport(self.url)
        try:
            response = transport.post("/", sql.encode(), {}, timeout)
        finally:
            transport.close()
        if response.status != 200:
            raise RuntimeError(response.body.decode("utf-8", "replace").strip())
        return response.body

    def send(self, rows: Sequence[Row], timeout: float) -> Result:
        """One insert for ``rows`` (called by the delivery layer)."""
        if self._create:
            self.query(ddl(self.table), timeout)
            self._create = False
        response = self._post(encode_rows(rows), timeout)
        result = response.result()
        if result.outcome is Outcome.RETRY and response.status != 503:
            match = _CODE.search(response.body)
            if match is not None:
                code = int(match.group(1))
                if code in _TOO_LARGE_CODES:
                    return classify_status(413, None, result.detail)
                if code not in _TRANSIENT_CODES:
                    return Result(Outcome.REJECTED, None, result.detail)
        return result


def from_spec(arg: str) -> ClickHouseExporter:
    """Build from ``clickhouse[:<url>]``.

    The URL defaults to ``OBS_CLICKHOUSE_URL``, the table to ``OBS_CLICKHOUSE_TABLE`` or
    ``obs_events``.
    """
    url = arg or os.environ.get("OBS_CLICKHOUSE_URL") or "http://127.0.0.1:8123"
    return ClickHouseExporter(url, table=os.environ.get("OBS_CLICKHOUSE_TABLE") or "obs_events")
