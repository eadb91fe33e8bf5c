"""A scripted backend for the delivery layer and the records it carries, shared by the delivery
and spool tests."""

from __future__ import annotations

from collections.abc import Sequence

from obs_middleware._core.metrics import registry
from obs_middleware._delivery import EXPORTING, DeliveryOptions, Outcome, Result, classify_status


class Backend:
    """A scripted ``send``: answers from ``script`` (then OK), records what got through."""

    def __init__(self, *script: Result, max_records: int | None = None) -> None:
        self.script = list(script)
        self.max_records = max_records
        self.received: list[int] = []
        self.calls = 0
        self.exporting: list[bool] = []

    def __call__(self, records: Sequence[dict], timeout: float) -> Result:
        self.calls += 1
        self.exporting.append(EXPORTING.get())
        if self.max_records is not None and len(records) > self.max_records:
            return classify_status(413)
        if self.script:
            result = self.script.pop(0)
            if result.outcome is not Outcome.OK:
                return result
        self.received.extend(r["i"] for r in records)
        return Result(Outcome.OK)


def recs(start: int, n: int) -> list[dict]:
    return [{"i": i, "name": "x"} for i in range(start, start + n)]


def metric(name: str) -> dict:
    return dict(registry.snapshot()[name].points)


RETRY = Result(Outcome.RETRY, None, "HTTP 503")


def spooled(tmp_path, **kw) -> DeliveryOptions:
    return DeliveryOptions(
        max_attempts=1, breaker_failures=1, breaker_cooldown_s=0, spool_dir=str(tmp_path), **kw
    )
