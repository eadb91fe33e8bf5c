"""SQL text analysis for database spans: operation, tables, and the statement without literals.

The literal stripping is the core's (``_core.sqltext``: privacy rules live in one place); this
module reads the statement's structure from the same token stream. Pure functions; callers cache
the result per distinct statement string, so the cost (far above a cached lookup for a long
statement) is paid once per statement, not per execution.
"""

from __future__ import annotations

from typing import NamedTuple

from .._core.sqltext import MAX_STATEMENT, scan

__all__ = ["MAX_STATEMENT", "Analysis", "analyze"]

MAX_TABLES = 8

# Known statement verbs: the operation is a metric label, so anything else is "OTHER".
_VERBS = frozenset(
    {
        "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE", "WITH", "VALUES",
        "TABLE", "CREATE", "DROP", "ALTER", "TRUNCATE", "RENAME", "COMMENT", "GRANT", "REVOKE",
        "BEGIN", "START", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE", "END", "SET", "RESET",
        "SHOW",
        "EXPLAIN", "ANALYZE", "VACUUM", "REINDEX", "CLUSTER", "PRAGMA", "ATTACH", "DETACH", "CALL",
        "EXEC", "EXECUTE", "DO", "LOCK", "COPY", "DECLARE", "FETCH", "MOVE", "CLOSE", "PREPARE",
        "DEALLOCATE", "DISCARD", "LISTEN", "NOTIFY", "UNLISTEN", "REFRESH", "USE", "DESCRIBE",
        "DESC",
        "OPTIMIZE", "CHECKPOINT", "LOAD",
    }
)  # fmt: skip
_DML = frozenset({"SELECT", "INSERT", "UPDATE", "DELETE", "MERGE"})
# Keywords after which a table name follows.
_TABLE_BEFORE = frozenset({"FROM", "JOIN", "INTO", "UPDATE", "TABLE", "TRUNCATE"})
# Words that may sit between such a keyword and the table name.
_TABLE_SKIP = frozenset({"ONLY", "LATERAL", "IF", "NOT", "EXISTS", "TABLE", "IGNORE", "OR"})
# ``UPDATE`` after these is a clause (``FOR UPDATE``, ``DO UPDATE``, ``KEY UPDATE``), not a table.
_NOT_UPDATE = frozenset({"FOR", "DO", "KEY"})
# Words that end a table-name search.
_NOT_NAME = frozenset(
    {"SET", "WHERE", "SELECT", "VALUES", "DEFAULT", "OF", "NOWAIT", "SKIP", "ON", "USING", "AS"}
)
# Words that open a query inside parentheses (a subquery, not a function call).
_QUERY_START = frozenset({"SELECT", "WITH", "VALUES", "INSERT", "UPDATE", "DELETE", "TABLE"})


class Analysis(NamedTuple):
    """What a span records about one statement."""

    operation: str  # SELECT, INSERT…, or OTHER
    tables: str | None  # comma-separated, in order of appearance; None when not found
    statement: str  # literals and placeholders replaced by ``?``
    has_comment: bool  # the original text carried a comment (sqlcommenter leaves those alone)


def analyze(statement: str, *, backslash_escapes: bool = False) -> Analysis:
    """Analyze one SQL statement (``backslash_escapes``: see ``_core.sqltext.scan``)."""
    found = scan(statement, backslash_escapes=backslash_escapes)
    operation, tables = _structure(found.words, found.idents)
    return Analysis(operation, tables, found.text, found.has_comment)


def _structure(words: list[str], idents: list[str]) -> tuple[str, str | None]:
    """Operation and table names from the token stream (keywords upper-cased)."""
    first = next((w for w in words if w != "("), "")
    operation = first if first in _VERBS else "OTHER"
    ctes: set[str] = set()
    found: list[str] = []
    stack: list[bool] = []  # open parens: True for a subquery, False for a call or a list
    n = len(words)
    for i, w in enumerate(words):
        if w == "(":
            stack.append(i + 1 < n and words[i + 1] in _QUERY_START)
        elif w == ")":
            if stack:
                stack.pop()
        elif operation == "WITH" and not stack and w in _DML:
            operation = w
        elif w == "AS" and 0 < i < n - 1 and words[i + 1] == "(":
            ctes.add(idents[i - 1].lower())  # WITH name AS (…)
        elif (
            w in _TABLE_BEFORE
            and (not stack or stack[-1])
            and not (w == "UPDATE" and i > 0 and words[i - 1] in _NOT_UPDATE)
        ):
            name = _name_at(words, idents, i + 1)
            if name and name.lower() not in ctes and name not in found:
                found.append(name)
    return operation, ",".join(found[:MAX_TABLES]) or None


def _name_at(words: list[str], idents: list[str], i: int) -> str | None:
    """Read the (maybe schema-qualified) identifier starting at token ``i``, after modifiers."""
    n = len(words)
    while i < n and words[i] in _TABLE_SKIP:
        i += 1
    parts: list[str] = []
    while i < n and (words[i] == "\0" or (words[i][0].isalpha() or words[i][0] == "_")):
        if words[i] in _NOT_NAME:
            break
        parts.append(idents[i])
        if i + 2 < n and words[i + 1] == ".":
            i += 2
        else:
            break
    return ".".join(parts) or None
