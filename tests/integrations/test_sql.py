"""SQL text analysis behind the SQLAlchemy integration: operation, tables, literal stripping."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from obs_middleware.integrations._sql import MAX_STATEMENT, analyze


@pytest.mark.parametrize(
    ("sql", "operation", "tables", "statement"),
    [
        (
            "SELECT users.id, users.name \nFROM users \nWHERE users.name = ? AND users.age > 30",
            "SELECT",
            "users",
            "SELECT users.id, users.name FROM users WHERE users.name = ? AND users.age > ?",
        ),
        ("SELECT pg_sleep(0.15)", "SELECT", None, "SELECT pg_sleep(?)"),
        (
            "INSERT INTO users (name, email) VALUES (%(name__0)s, %(email__0)s), "
            "(%(name__1)s, %(email__1)s) RETURNING users.id",
            "INSERT",
            "users",
            "INSERT INTO users (name, email) VALUES (?, ?) RETURNING users.id",
        ),
        (
            "SELECT * FROM a JOIN public.b ON a.id = b.a_id WHERE a.id IN ($1, $2, $3)",
            "SELECT",
            "a,public.b",
            "SELECT * FROM a JOIN public.b ON a.id = b.a_id WHERE a.id IN (?)",
        ),
        (
            "WITH recent AS (SELECT * FROM orders WHERE ts > :ts) "
            "SELECT count(*) FROM recent JOIN users ON users.id = recent.uid",
            "SELECT",
            "orders,users",
            "WITH recent AS (SELECT * FROM orders WHERE ts > ?) "
            "SELECT count(*) FROM recent JOIN users ON users.id = recent.uid",
        ),
        (
            "UPDATE accounts SET balance = balance - 100 WHERE id = %s",
            "UPDATE",
            "accounts",
            "UPDATE accounts SET balance = balance - ? WHERE id = ?",
        ),
        (
            '/* app */ DELETE FROM "User" WHERE "User".id = 5',
            "DELETE",
            "User",
            'DELETE FROM "User" WHERE "User".id = ?',
        ),
        ("CREATE TABLE IF NOT EXISTS items (id INTEGER)", "CREATE", "items", None),
        ("BEGIN", "BEGIN", None, "BEGIN"),
        ("frobnicate the widgets", "OTHER", None, "frobnicate the widgets"),
        ("(SELECT 1) UNION (SELECT 2)", "SELECT", None, "(SELECT ?) UNION (SELECT ?)"),
    ],
)
def test_analyze_extracts_operation_tables_and_sanitized_statement(
    sql: str, operation: str, tables: str | None, statement: str | None
) -> None:
    found = analyze(sql)
    assert (found.operation, found.tables) == (operation, tables)
    if statement is not None:
        assert found.statement == statement


def test_function_call_from_is_not_a_table() -> None:
    found = analyze("SELECT extract(year FROM ts), substring(name FROM 2) FROM events")
    assert found.tables == "events"


def test_clause_updates_are_not_tables() -> None:
    assert analyze("SELECT * FROM jobs FOR UPDATE SKIP LOCKED").tables == "jobs"
    upsert = "INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = excluded.a"
    assert analyze(upsert).tables == "t"


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM t WHERE s = 'it''s secret'",
        "SELECT * FROM t WHERE s = E'a\\'secret'",
        "SELECT * FROM t WHERE s = $$secret$$",
        "SELECT * FROM t WHERE s = $tag$secret$tag$",
        "SELECT * FROM t WHERE s = X'5ec2e7'",
        "SELECT * FROM t WHERE s = N'secret'",
        "SELECT * FROM t WHERE s = 'unterminated secret",
        "SELECT * FROM t WHERE s = $$unterminated secret",
        "SELECT * FROM t -- secret\nWHERE a = 1",
        "SELECT * FROM t /* secret */ WHERE a = 1",
    ],
)
def test_literals_and_comments_never_survive(sql: str) -> None:
    found = analyze(sql)
    assert "secret" not in found.statement
    assert "5ec2e7" not in found.statement


def test_backslash_escapes_follow_the_dialect() -> None:
    mysql = analyze("SELECT 'it\\'s secret' AS a", backslash_escapes=True)
    assert mysql.statement == "SELECT ? AS a"
    # Standard SQL: the backslash is a plain character and the string ends at the next quote.
    assert analyze("SELECT 'C:\\' AS a").statement == "SELECT ? AS a"


def test_comment_is_reported_for_sqlcommenter() -> None:
    assert analyze("SELECT 1 /*traceparent='x'*/").has_comment
    assert not analyze("SELECT 1").has_comment


def test_long_statements_are_cut() -> None:
    found = analyze("SELECT " + ", ".join(f"col{i}" for i in range(2000)) + " FROM t")
    assert len(found.statement) == MAX_STATEMENT + 1
    assert found.statement.endswith("…")


def test_casts_are_not_placeholders() -> None:
    assert analyze("SELECT p0::VARCHAR FROM t").statement == "SELECT p0::VARCHAR FROM t"


@given(st.text(alphabet=string.ascii_letters + string.digits + " '\\$\"-*/;", min_size=1))
def test_a_string_literal_never_leaks(secret: str) -> None:
    quoted = "'" + secret.replace("'", "''") + "'"
    found = analyze(f"SELECT * FROM t WHERE a = {quoted} AND b = 1")
    assert found.statement == "SELECT * FROM t WHERE a = ? AND b = ?"
