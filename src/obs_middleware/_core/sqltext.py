"""SQL text without its literals: the tokenizer behind ``db.statement`` and cleaned error messages.

One pass of a tokenizer over the statement: string, dollar-quoted, numeric and hex literals and bind
placeholders become ``?``, comments are dropped (they can carry anything), whitespace collapses to
one space, and runs of ``?`` lists (``IN (?, ?, ?)``, multi-row ``VALUES``) collapse to one, so the
text stays low-cardinality. Pure functions; the SQL integration caches the result per distinct
statement string, error messages pay it only on the error path.
"""

from __future__ import annotations

import functools
import re
from typing import NamedTuple

__all__ = ["MAX_STATEMENT", "Scan", "scan", "strip_literals", "strip_message_literals"]

MAX_STATEMENT = 2000  # characters of sanitized text kept

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


class Scan(NamedTuple):
    """One statement read by the tokenizer."""

    text: str  # literals and placeholders replaced by ``?``, cut to ``MAX_STATEMENT``
    words: list[str]  # uppercase keywords and identifiers, ``?`` and parens: the structure
    idents: list[str]  # the original spelling of each entry in ``words``
    has_comment: bool  # the original text carried a comment


def scan(statement: str, *, backslash_escapes: bool = False) -> Scan:
    r"""Tokenize one SQL statement.

    ``backslash_escapes``: ``'…'`` strings treat ``\\`` as an escape (MySQL/MariaDB); PostgreSQL
    ``E'…'`` strings always do. A quote that never closes hides the rest of the statement, so a
    tokenizer mismatch can only over-redact, never leak.
    """
    out: list[str] = []
    words: list[str] = []
    idents: list[str] = []
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
    return Scan(text, words, idents, has_comment)


@functools.lru_cache(maxsize=256)
def strip_literals(statement: str) -> str:
    """``statement`` with its literals and placeholders replaced by ``?`` (see ``scan``).

    Cached: the statements of failing queries repeat, and a scan costs tens of µs.
    """
    return scan(statement).text


def strip_message_literals(line: str) -> str:
    """One line of a database message with quoted text and numbers replaced by ``?``.

    Drivers echo values in messages (``Duplicate entry 'bob@x' …``, ``invalid input syntax for
    type integer: "abc"``, SQLite's ``near "…": syntax error``): both quote styles are treated as
    values, since messages mix identifiers and data freely; a quote left open hides the rest.
    """
    return _pattern("message").sub("?", line)
