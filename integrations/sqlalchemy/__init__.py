"""Compatibility suite: the SQLAlchemy integration on SQLAlchemy 2.x, SQLite and PostgreSQL 15."""
