"""What ``obs report`` and ``obs dashboard`` say about a store they cannot read."""

from __future__ import annotations

import os
import sqlite3

from ..exporters.sqlite import connect

__all__ = ["MISSING_HINT", "problem"]

MISSING_HINT = "run `obs demo` to make one, or add the 'sqlite' exporter to configure()"


def problem(path: str) -> str | None:
    """Why the file at ``path`` is not a store ``obs`` can read; None when it is one.

    A missing file, a file that is not SQLite (a ``.jsonl`` export, say) and a SQLite database
    without the store's ``records`` table each get a sentence naming what was expected.
    """
    if not os.path.exists(path):
        return f"no store at {path} ({MISSING_HINT})"
    expected = (
        "--store expects the SQLite file the 'sqlite' exporter and `obs demo` write "
        "(default: $OBS_STORE or obs.db)"
    )
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        return f"cannot open {path} ({exc}); {expected}"
    try:
        conn.execute("SELECT 1 FROM records LIMIT 0")
    except sqlite3.DatabaseError as exc:
        what = "SQLite, but not an obs store" if "no such table" in str(exc) else "not SQLite"
        return f"{path} is {what} ({exc}); {expected}"
    finally:
        conn.close()
    return None
