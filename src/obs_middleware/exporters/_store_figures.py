"""Figures the SQLite store computes from its rows: exact percentiles, statement fingerprints and
labels that never read the same, AI latency summaries, pool peaks, code locations."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

__all__ = [
    "fingerprint",
    "latency",
    "location",
    "percentile",
    "pool_peaks",
    "short_labels",
    "summary",
]

Row = dict[str, Any]

# Attribute keys a query span may carry to say where in the user's code it ran.
_LOCATION_KEYS = (
    ("code.filepath", "code.lineno", "code.function"),
    ("code.file", "code.line", "code.function"),
)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0 to 100) of ascending ``sorted_values``, exactly.

    Linear interpolation between closest ranks (numpy's default, ``statistics.quantiles(...,
    method="inclusive")``); 0.0 for no values.
    """
    n = len(sorted_values)
    if n == 0:
        return 0.0
    pos = (n - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def fingerprint(statement: str) -> str:
    """A short stable id of a statement's text (8 hex digits), to tell statements apart."""
    return hashlib.blake2b(statement.encode("utf-8", "replace"), digest_size=4).hexdigest()


def short_labels(texts: Sequence[str], width: int) -> list[str]:
    """``texts`` cut to ``width`` characters each, every different text still told apart.

    A long text keeps its start and its end (``SELECT … WHERE users.email = ?``: statements that
    share their first columns differ in their ``WHERE``). Texts that would still read the same
    show where they part (``SELECT ima…WHERE vector_probe(…``), and end with their
    ``fingerprint`` if even that is not enough.
    """
    flat = [" ".join(text.split()) for text in texts]
    labels = [_middle_cut(text, width) for text in flat]
    for indexes in _clashes(flat, labels):
        # Where they part: the common prefix of a group is that of its least and greatest text.
        lo, hi = min(flat[i] for i in indexes), max(flat[i] for i in indexes)
        split = next((n for n, (a, b) in enumerate(zip(lo, hi, strict=False)) if a != b), len(lo))
        for i in indexes:
            labels[i] = _window(flat[i], width, split)
    for indexes in _clashes(flat, labels):
        for i in indexes:
            tag = " #" + fingerprint(flat[i])
            labels[i] = _middle_cut(flat[i], max(width - len(tag), 2)) + tag
    return labels


def _clashes(texts: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Indexes of different texts given the same label, grouped by label."""
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    return [group for group in by_label.values() if len({texts[i] for i in group}) > 1]


def _middle_cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = (width - 1) * 3 // 5
    tail = width - 1 - head
    return text[:head].rstrip() + "…" + (text[-tail:].lstrip() if tail > 0 else "")


def _window(text: str, width: int, split: int) -> str:
    """``text`` cut to ``width`` around ``split``: where it parts from texts sharing its start."""
    if len(text) <= width:
        return text
    head = width // 4
    start = max(split - width // 4, head)
    if start <= head:
        return text[: width - 1] + "…"
    rest = text[start : start + width - head - 1]
    if start + len(rest) < len(text):
        rest = rest[:-1] + "…"
    return text[:head] + "…" + rest


def summary(durations: Sequence[float]) -> dict[str, float]:
    return {
        "p50": percentile(durations, 50),
        "p95": percentile(durations, 95),
        "p99": percentile(durations, 99),
        "max": durations[-1] if durations else 0.0,
    }


# (row key prefix, span attribute): the latency figures an AI call may carry (issue 17 item 10).
_AI_LATENCY = (
    ("ttft", "ai.time_to_first_token_ms"),
    ("tokens_per_s", "ai.output_tokens_per_s"),
    ("queue", "ai.queue_ms"),
    ("run", "ai.run_ms"),
)


def latency(attrs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """p50/p95 of each latency figure over the calls that report it (None when none does)."""
    out: dict[str, Any] = {}
    for key, attr in _AI_LATENCY:
        values = sorted(
            float(v) for a in attrs if isinstance(v := a.get(attr), (int, float)) and v >= 0
        )
        out[f"{key}_p50"] = percentile(values, 50) if values else None
        out[f"{key}_p95"] = percentile(values, 95) if values else None
    out["streams"] = sum(1 for a in attrs if "ai.time_to_first_token_ms" in a)
    return out


def pool_peaks(m: dict[str, Row], checkouts: float) -> Row:
    """Peak checked out, overflow and utilisation of one pool from its sampled gauges.

    A sample misses a burst that ended before it, but not what the burst left behind: a bounded
    ``QueuePool`` (it reports ``utilization``) and a ``NullPool`` (size 0) open a connection only
    when every open one is checked out, so the most connections ever open at once were all in
    use at once, and the open count stays up until they are closed. And a pool checked out at
    all had one connection in use.
    """

    def peak(name: str) -> float | None:
        return m[name]["peak"] if name in m else None

    in_use = peak("checked_out")
    overflow = peak("overflow")
    utilization = peak("utilization")
    size = m["size"]["last"] if "size" in m else None
    derived = 1.0 if checkouts > 0 else 0.0
    if (utilization is not None or size == 0) and "open" in m:
        derived = max(derived, m["open"]["peak"])
    if derived > (in_use or 0.0):
        in_use = derived
        if size and overflow is not None:
            overflow = max(overflow, in_use - size)
        if utilization is not None:  # the samples' figure is below the truth: unknown, or this
            capacity = _capacity(m)
            utilization = max(utilization, in_use / capacity) if capacity else None
    return {"peak_checked_out": in_use, "peak_overflow": overflow, "peak_utilization": utilization}


def _capacity(m: dict[str, Row]) -> float | None:
    """The capacity (size + max overflow) of a bounded pool, from a sample with some in use."""
    if "checked_out" not in m or "utilization" not in m:
        return None
    used = dict(m["utilization"]["series"])
    for ts, out in m["checked_out"]["series"]:
        if out > 0 and used.get(ts, 0) > 0:
            return float(round(out / used[ts]))
    return None


def location(attrs: dict[str, Any]) -> str | None:
    for file_key, line_key, func_key in _LOCATION_KEYS:
        if attrs.get(file_key):
            where = f"{attrs[file_key]}:{attrs.get(line_key) or '?'}"
            return f"{where} in {attrs[func_key]}" if attrs.get(func_key) else where
    value = attrs.get("code.location")
    return str(value) if value else None
