"""Redaction: the one place privacy rules live, applied before anything is queued for export."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from types import CodeType

from .sqltext import strip_literals, strip_message_literals

__all__ = [
    "MAX_MESSAGE",
    "PLAIN_PATH",
    "PRIVATE",
    "SENSITIVE_HEADERS",
    "clean_path",
    "client_text",
    "compile_secret_patterns",
    "error_message",
    "query_keys",
    "scrub",
    "scrub_error",
    "stack_trace",
    "truncate",
]

PRIVATE = "[PRIVATE]"
REDACTED = "[REDACTED]"
MAX_MESSAGE = 1024  # characters of an error message (or of other text a client chose) kept
MAX_STACK_FRAMES = 32  # frames of a stack trace kept: the innermost (where it was raised)
MAX_STACK_CHARS = 4096  # characters of a stack trace kept, innermost frames first
_SCRUB_MARGIN = 256  # scrubbed past the cut, so a secret across it is still recognised
# A path of only these cannot hold a secret: every secret pattern needs a separator ("-", "_",
# "=", ":", "."), an upper-case letter or whitespace. Checking costs less than one anchor search.
PLAIN_PATH = "/0123456789abcdefghijklmnopqrstuvwxyz"
# Characters of a message the cleaner reads: bounds its cost. What is kept is the start of the
# result, far from that cut (a secret cut in half there stays out of it).
_READ_LIMIT = 16 * MAX_MESSAGE

# Never exported unless the user opts in explicitly (HttpOptions.allow_sensitive_headers).
SENSITIVE_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "x-csrf-token",
        "x-forwarded-for",
        "x-real-ip",
        "forwarded",
        "cf-connecting-ip",
        "true-client-ip",
    }
)

_KEY_NAMES = r"api[_-]?key|secret(?:[_-]?(?:access[_-]?)?key)?|token|passw(?:or)?d|pwd"
# A value in quotes (dict and JSON reprs, any length), else a bare run of at least 4 characters.
_QUOTED = r"""b?"(?:[^"\\\n]|\\.)*"|b?'(?:[^'\\\n]|\\.)*'"""
# Each secret pattern with the anchors one of which it always contains (lower case: looked for in
# the lowered text; else as written) and, when it also needs one of some characters (a "=" or ":"
# after a key name), those characters. The fal key has no anchor: its ":" has 12 and 32 hex digits
# around it.
_KEY_VALUE = ("=", ":")
_PATTERNS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    (r"(?i:\bbearer)\s+[A-Za-z0-9._~+/=-]{8,}", ("bearer",), ()),
    (r"(?i:\bbasic)\s+[A-Za-z0-9+/=]{8,}", ("basic",), ()),
    (r"(?i:\btoken)\s+[A-Za-z0-9._~+/=-]{20,}", ("token",), ()),  # ``Token`` scheme (DRF, GitHub)
    # OpenAI, Anthropic (no word boundary: a key glued to text still goes)
    (r"sk-[A-Za-z0-9_-]{16,}", ("sk-",), ()),
    (r"r8_[A-Za-z0-9]{20,}", ("r8_",), ()),  # Replicate
    (r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", ("eyJ",), ()),  # JWT
    (r"\b(?:ak|as)-[A-Za-z0-9]{16,}", ("ak-", "as-"), ()),  # Modal token id/secret
    (r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{32}\b", (), ()),
    (r"\b(?:AKIA|ASIA)[A-Z0-9]{16}", ("AKIA", "ASIA"), ()),  # AWS access key id
    (
        r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}",  # GitHub
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
        (),
    ),
    (
        r"[rs]k_(?:live|test)_[A-Za-z0-9]{10,}|whsec_[A-Za-z0-9]{20,}",  # Stripe
        ("k_live_", "k_test_", "whsec_"),
        (),
    ),
    (r"\bxox[abposr]-[A-Za-z0-9-]{10,}", ("xox",), ("-",)),  # Slack
    (r"\bAIza[0-9A-Za-z_-]{35}", ("AIza",), ()),  # Google API key
    # ``key=value``, ``key: value``, ``'key': 'value'``, ``"key":"value"``
    (
        rf"(?i:{_KEY_NAMES})[\"']?\s*[=:]\s*(?:{_QUOTED}|[^\s&,;]{{4,}})",
        ("api", "secret", "passw", "pwd", "token"),
        _KEY_VALUE,
    ),
    # header lines and header dicts: the scheme and the credentials, every cookie
    (
        rf"(?i:authorization)[\"']?\s*[=:]\s*(?:{_QUOTED}|[A-Za-z]+\s+[^\s,;'\"]+|[^\s,;'\"]+)",
        ("authorization",),
        _KEY_VALUE,
    ),
    (rf"(?i:cookie)[\"']?\s*[=:]\s*(?:{_QUOTED}|[^\n'\"]+)", ("cookie",), _KEY_VALUE),
    (r"(?<=://)[^\s/?#@:'\"<>]*:[^\s/?#'\"<>]*(?=@)", ("://",), ()),  # URL credentials
)
_SECRET_PATTERNS = tuple(pattern for pattern, _, _ in _PATTERNS)
# (bit, anchors in lower case, anchors as written, needed characters) of each anchored pattern.
_LOOKUP = tuple(
    (
        1 << i,
        tuple(a for a in anchors if a.islower()),
        tuple(a for a in anchors if not a.islower()),
        needs,
    )
    for i, (_, anchors, needs) in enumerate(_PATTERNS)
    if anchors
)
_FAL_BIT = sum(1 << i for i, (_, anchors, _) in enumerate(_PATTERNS) if not anchors)

# The user's patterns (RedactionOptions.extra_patterns): their anchors are unknown, every text is
# searched for them.
_extra: tuple[str, ...] = ()

# The quick first look: every anchor of the table above (a test keeps them in step), cheapest
# checks first; most texts hold none, and looking costs a few µs on a 1 kB prompt. A text that
# holds some is searched only for those patterns: trying the whole alternation at every position
# costs ~0.4 ms per kB.
_ANCHORS = ("bearer", "basic", "token")
_CASED_ANCHORS = ("AKIA", "ASIA", "AIza")
_KEY_ANCHORS = ("api", "secret", "passw", "pwd", "authorization", "cookie")
_DASH_ANCHORS = ("sk-", "ak-", "as-", "xox")
_UNDERSCORE_ANCHORS = (
    "r8_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "k_live_", "k_test_", "whsec_",
)  # fmt: skip
_HEX = "0123456789abcdef"
# Case-insensitive matching also takes dotless i and dotted capital I for "i", long s for "s",
# which lower() alone does not turn into those letters.
_FOLD = str.maketrans({"\u0131": "i", "\u0130": "i", "\u017f": "s"})


def compile_secret_patterns(extra: Iterable[str] = ()) -> None:
    """Install the secret patterns plus the user's ``extra`` ones (called by ``configure``)."""
    global _extra
    extra = tuple(extra)
    re.compile("|".join(extra))  # an invalid pattern fails here, in configure
    _extra = extra


def _any_in(anchors: tuple[str, ...], text: str) -> bool:
    return any(anchor in text for anchor in anchors)


def _lowered(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def _may_hold_secret(text: str, lowered: str) -> bool:
    for anchor in _ANCHORS:
        if anchor in lowered:
            return True
    for anchor in _CASED_ANCHORS:
        if anchor in text:
            return True
    if ("=" in text or ":" in text) and _any_in(_KEY_ANCHORS, lowered):
        return True
    if "-" in text and _any_in(_DASH_ANCHORS, text):
        return True
    if "_" in text and _any_in(_UNDERSCORE_ANCHORS, text):
        return True
    return "eyJ" in text or "://" in text or _may_hold_fal_key(text)


def _may_hold_fal_key(text: str) -> bool:
    colon = text.find(":", 12)
    while colon != -1:
        key = text[colon - 12 : colon] + text[colon + 1 : colon + 33]
        if len(key) == 44 and not key.strip(_HEX):
            return True
        colon = text.find(":", colon + 1)
    return False


def _present(text: str, lowered: str) -> int:
    """The patterns whose anchors (and needed characters) ``text`` holds, as a bit mask."""
    mask = 0
    for bit, lower_anchors, cased_anchors, needs in _LOOKUP:
        if needs:
            for char in needs:
                if char in text:
                    break
            else:
                continue
        for anchor in lower_anchors:
            if anchor in lowered:
                mask |= bit
                break
        else:
            for anchor in cased_anchors:
                if anchor in text:
                    mask |= bit
                    break
    if _may_hold_fal_key(text):
        mask |= _FAL_BIT
    return mask


@functools.lru_cache(maxsize=64)
def _subset(mask: int, extra: tuple[str, ...]) -> re.Pattern[str]:
    """The alternation of the patterns in ``mask`` and ``extra``, in order. On a text that holds
    no anchor of the others it finds exactly what the whole alternation finds, faster: a single
    pattern is searched for its literal prefix, not tried at every position."""
    chosen = (p for i, p in enumerate(_SECRET_PATTERNS) if mask >> i & 1)
    return re.compile("|".join((*chosen, *extra)))


def scrub(text: str) -> str:
    """Replace secrets of known shapes with ``[REDACTED]``: provider API keys (OpenAI, Anthropic,
    Replicate, fal, Modal, AWS, GitHub, Stripe, Slack, Google), bearer/basic/token credentials,
    JWTs, URL credentials, ``key=value`` and quoted-key secrets, Authorization and Cookie values,
    and the user's ``extra_patterns``."""
    lowered = _lowered(text)
    mask = _present(text, lowered) if _may_hold_secret(text, lowered) else 0
    extra = _extra
    if not mask and not extra:
        return text
    return _subset(mask, extra).sub(REDACTED, text)


# ``file:line in function`` of a frame, scrubbed, by (id of its code object, line): errors repeat
# at the same places, so the trace of a recurring error costs one lookup per frame (a code
# object's own hash reads its whole contents: ~10x the lookup). The entry holds the code object,
# so its id is not reused while cached. Bounded.
_FRAME_LINES: dict[tuple[int, int], tuple[CodeType, str]] = {}
_MAX_FRAME_LINES = 4096


def _frame_line(code: CodeType, line: int) -> str:
    key = (id(code), line)
    entry = _FRAME_LINES.get(key)
    if entry is None or entry[0] is not code:
        name = getattr(code, "co_qualname", code.co_name)  # 3.11+: Class.method
        entry = (code, scrub(f"{code.co_filename}:{line} in {name}"))
        if len(_FRAME_LINES) >= _MAX_FRAME_LINES:
            _FRAME_LINES.clear()
        _FRAME_LINES[key] = entry
    return entry[1]


def stack_trace(exc: BaseException) -> str | None:
    """The frames ``exc`` passed through as ``file:line in function`` lines, outermost first
    (as Python prints them); None if it carries no traceback.

    Frames only: no source lines (they may hold literal secrets or prompts) and no message
    (``error_message`` cleans that). At most ``MAX_STACK_FRAMES`` innermost frames and
    ``MAX_STACK_CHARS`` characters; a first line says how many were left out. Paths are scrubbed
    of secrets of known shapes. Cost: one walk of the traceback and a cached line per frame
    (no file I/O).
    """
    tb = exc.__traceback__
    if tb is None:
        return None
    frames: list[tuple[CodeType, int]] = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    kept = [_frame_line(code, line) for code, line in frames[-MAX_STACK_FRAMES:]]
    size = 0
    for i in range(len(kept) - 1, -1, -1):
        size += len(kept[i]) + 1
        if size > MAX_STACK_CHARS:
            kept = kept[i + 1 :]
            break
    omitted = len(frames) - len(kept)
    text = "\n".join(kept)
    return f"({omitted} outer frames omitted)\n{text}" if omitted else text


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis marker (``limit=0`` → empty)."""
    if limit <= 0:
        return ""
    return text if len(text) <= limit else text[:limit] + "…"


def query_keys(query: str) -> str:
    """``a=1&b=2`` -> ``a=&b=``: which parameters were sent, never their values."""
    return "&".join(part.partition("=")[0] + "=" for part in query.split("&") if part)


# Drivers whose exceptions carry database messages (values quoted in them, SQL echoed).
_DB_MODULES = frozenset(
    {
        "sqlite3", "aiosqlite", "psycopg", "psycopg2", "asyncpg", "pg8000", "aiopg", "pymysql",
        "MySQLdb", "mysql", "aiomysql", "asyncmy", "oracledb", "cx_Oracle", "pyodbc", "pymssql",
        "duckdb", "sqlalchemy",
    }
)  # fmt: skip
# A URL's query: after a path character, up to whitespace or a quote, holding at least one "=".
_QUERY = re.compile(r"(?<=[\w/.~%-])\?(?=[^\s'\"<>`]*=)([^\s'\"<>`]*)")
# PostgreSQL's DETAIL echoes the row: "Key (email)=(bob@x) already exists.", "Failing row
# contains (…)". A value may hold parentheses and newlines: everything up to the last ")" goes.
_PG_VALUES = re.compile(r"(\bKey \(.*?\)=|\bFailing row contains )\(.*\)", re.S)
# Pydantic's validation errors echo the input: "[type=…, input_value='bob@x', input_type=str]".
_PYDANTIC_INPUT = re.compile(r"(\binput_value=).*(?=, input_type=[\w.]+\]$)", re.M)
_SQLALCHEMY_LINK = re.compile(r"\n\(Background on this error at: https://sqlalche\.me/[\w/]+\)\Z")


def error_message(exc: BaseException, *, database: bool | None = None) -> str:
    """``exc``'s message as exported: cleaned by ``scrub_error``, cut to ``MAX_MESSAGE``.

    ``database``: clean it as a database message (default: when ``exc`` comes from a known
    driver or SQLAlchemy). Runs only when an exception is recorded.
    """
    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the caller
        return REDACTED
    if database is None:
        database = (type(exc).__module__ or "").partition(".")[0] in _DB_MODULES
    return scrub_error(text, database=database)[:MAX_MESSAGE]


def scrub_error(text: str, *, database: bool = False) -> str:
    """An error message without the values it echoes: the one cleaner of exception messages.

    SQLAlchemy's ``[SQL: …]`` keeps the statement without literals and ``[parameters: …]`` becomes
    ``[REDACTED]``; the driver's message (``database=True``, or inside SQLAlchemy's) loses quoted
    text, numbers and the echoed statement line (``LINE 1: …``); PostgreSQL's ``Key (…)=(…)`` and
    ``Failing row contains (…)`` lose the row; Pydantic's ``input_value=…`` goes; URL queries
    keep their keys only; then ``scrub``. Reads the first 16 kB of ``text`` at most.
    """
    text = text[:_READ_LIMIT]
    if "[SQL: " in text:
        text = _sqlalchemy_message(text)
    elif database:
        text = _driver_message(text)
    elif ")=(" in text or "Failing row" in text:
        text = _PG_VALUES.sub(r"\1(?)", text)
    if "input_value=" in text:
        text = _PYDANTIC_INPUT.sub(r"\1?", text)
    if "?" in text:
        text = _QUERY.sub(lambda m: "?" + query_keys(m.group(1)), text)
    return scrub(text)


def _driver_message(text: str) -> str:
    text = _PG_VALUES.sub(r"\1(?)", text)
    lines: list[str] = []
    skip_caret = False
    for line in text.split("\n"):
        if skip_caret and "^" in line and not line.strip(" ^"):
            continue  # the caret under an echoed statement line
        # PostgreSQL echoes the statement line, cut anywhere (inside a literal too): drop it.
        skip_caret = line.startswith("LINE ") and ":" in line
        if not skip_caret:
            lines.append(strip_message_literals(line))
    return "\n".join(lines)


def _sqlalchemy_message(text: str) -> str:
    """SQLAlchemy's layout: the driver's message, ``[SQL: …]``, ``[parameters: …]``, a link."""
    start = text.index("[SQL: ")
    rest = text[start + 6 :]
    # The statement ends before the parameters, else before the link, else at the last "]".
    ends = [i for i in (rest.find("]\n[parameters: "), rest.find("]\n[SQL parameters")) if i >= 0]
    link = _SQLALCHEMY_LINK.search(rest)
    if ends:
        end = min(ends)
    elif link is not None and rest[: link.start()].endswith("]"):
        end = link.start() - 1
    else:
        end = len(rest) - 1 if rest.endswith("]") else len(rest)
    out = f"{_driver_message(text[:start])}[SQL: {strip_literals(rest[:end])}]"
    after = rest[end + 1 :]
    if after.startswith("\n[parameters: "):
        out += f"\n[parameters: {REDACTED}]"
    elif after.startswith("\n[SQL parameters hidden due to hide_parameters=True]"):
        out += "\n[SQL parameters hidden due to hide_parameters=True]"
    if link is not None and link.start() >= end:
        out += link.group()
    return out


def client_text(text: str) -> str:
    """A string the client chose (a method, a path) as recorded: secrets scrubbed, and cut to
    ``MAX_MESSAGE`` characters with a marker (the work bounded whatever its length).
    """
    if len(text) <= MAX_MESSAGE:
        return scrub(text)
    return scrub(text[: MAX_MESSAGE + _SCRUB_MARGIN])[:MAX_MESSAGE] + "…"


def clean_path(path: str) -> str:
    """A URL path as recorded: a plain one (``PLAIN_PATH`` characters) as it is, else as
    ``client_text``. With user patterns installed any text may match: every path is searched.
    """
    if len(path) <= MAX_MESSAGE and not path.lstrip(PLAIN_PATH) and not _extra:
        return path
    return client_text(path)
