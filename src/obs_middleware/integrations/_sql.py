"""SQL text analysis for database spans: operation, tables, and the statement without literals.

One pass of a tokenizer over the statement: string, dollar-quoted, numeric and hex literals and bind
placeholders become ``?``, comments are dropped (they can carry anything), whitespace collapses to
one space, and runs of ``?`` lists (``IN (?, ?, ?)``, multi-row ``VALUES``) collapse to one, so the
text stays low-cardinality. Pure functions; callers cache the result per distinct statement string,
so the cost (tens of µs for a long statement) is paid once per statement, not per execution.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

__all__ = ["Analysis", "analyze", "sanitize_message"]

MAX_STATEMENT = 2000  # characters of sanitized text kept on a span
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

_STRING_BODY = r"'(?:[^']|'')*'"
_STRING_BODY_BS = r"'(?:[^'\\]|''|\\.)*'"  # backslash escapes: MySQL strings, PostgreSQL E''
_COMMON = r"""
  (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
| (?P<dollar>\$(?P<tag>[A-Za-z_]\w*|)\$.*?\$(?P=tag)\$)
| (?P<estring>[Ee]{bs})
| (?P<string>(?:[NnBbXx]|[Uu]&)?{body})
| (?P<ident>"(?:[^"]|"")*"|`(?:[^`]|``)*`)
| (?P<param>%\(\w+\)s|%s|\$\d+|(?<![:\w]):[A-Za-z_]\w*|\?)
| (?P<word>[A-Za-z_][\w$]*)
| (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
| (?P<open>\()
| (?P<close>\))
| (?P<dot>\.)
| (?P<stray>(?:['"`]|\$(?:[A-Za-z_]\w*)?\$).*)
| (?P<space>\s+)
"""
_IN_LIST = r"\b(IN\s*)\(\s*\?(?:\s*,\s*\?)+\s*\)"
_ROWS = r"(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\1)+"
_MESSAGE_LITERAL = r"'(?:[^']|'')*'?|\"(?:[^\"]|\"\")*\"?|\b\d+(?:\.\d+)?\b"


@functools.cache
def _pattern(name: str) -> re.Pattern[str]:
    """Compile on first use: ``re`` compiles in Python, ~20 ms for these at import time."""
    if name in ("token", "token_bs"):
        strings = _STRING_BODY_BS if name == "token_bs" else _STRING_BODY
        source = _COMMON.replace("{bs}", _STRING_BODY_BS).replace("{body}", strings)
        return re.compile(source, re.X | re.S)
    return re.compile({"in": _IN_LIST, "rows": _ROWS, "message": _MESSAGE_LITERAL}[name], re.I)


class Analysis(NamedTuple):
    """What a span records about one statement."""

    operation: str  # SELECT, INSERT…, or OTHER
    tables: str | None  # comma-separated, in order of appearance; None when not found
    statement: str  # literals and placeholders replaced by ``?``
    has_comment: bool  # the original text carried a comment (sqlcommenter leaves those alone)


def analyze(statement: str, *, backslash_escapes: bool = False) -> Analysis:
    r"""Analyze one SQL statement.

    ``backslash_escapes``: ``'…'`` strings treat ``\\`` as an escape (MySQL/MariaDB); PostgreSQL
    ``E'…'`` strings always do. A quote that never closes hides the rest of the statement, so a
    tokenizer mismatch can only over-redact, never leak.
    """
    out: list[str] = []
    words: list[str] = []  # uppercase keywords and identifiers, with parens, for structure
    idents: list[str] = []  # the original spelling of each entry in ``words``
    has_comment = False
    pos = 0
    token = _pattern("token_bs" if backslash_escapes else "token")
    for m in token.finditer(statement):
        if m.start() != pos:  # operators and punctuation pass through unchanged
            out.append(statement[pos : m.start()])
        pos = m.end()
        kind = m.lastgroup
        if kind == "tag":  # the dollar group's inner name: report the outer group
            kind = "dollar"
        text = m.group()
        if kind == "space":
            out.append(" ")
        elif kind == "comment":
            has_comment = True
            out.append(" ")
        elif kind in ("string", "estring", "dollar", "number", "param", "stray"):
            out.append("?")
            words.append("?")
            idents.append("?")
        elif kind == "word":
            out.append(text)
            words.append(text.upper())
            idents.append(text)
        elif kind == "ident":
            out.append(text)
            words.append("\0")  # a quoted identifier: never a keyword
            idents.append(text[1:-1].replace(text[0] * 2, text[0]))
        else:  # open, close, dot
            out.append(text)
            words.append(text)
            idents.append(text)
    out.append(statement[pos:])
    text = " ".join("".join(out).split())
    text = _pattern("rows").sub(r"\1", _pattern("in").sub(r"\1(?)", text))
    if len(text) > MAX_STATEMENT:
        text = text[:MAX_STATEMENT] + "…"
    operation, tables = _structure(words, idents)
    return Analysis(operation, tables, text, has_comment)


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


def sanitize_message(message: str, limit: int = 300) -> str:
    """First line of a database error message with quoted text and numbers replaced by ``?``.

    Drivers echo values in messages (``Duplicate entry 'bob@x' …``, PostgreSQL ``DETAIL: Key
    (email)=(…)``, ``invalid input syntax for type integer: "abc"``): only the first line is kept
    and both quote styles are treated as values, since messages mix identifiers and data freely.
    """
    first = message.strip().split("\n", 1)[0]
    return _pattern("message").sub("?", first)[:limit]
