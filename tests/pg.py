"""The PostgreSQL server of a test module (tools/postgres.py), skipped locally and required in CI."""

from __future__ import annotations

import itertools

import pytest

from tools.postgres import PostgresServer

from .needs import in_ci

_names = itertools.count()


def serving():
    """A throw-away PostgreSQL server until the generator is closed: `yield from` it in a module's fixture."""
    try:
        import psycopg2  # noqa: F401 - peewee's PostgreSQL driver
    except ImportError:
        if in_ci():
            raise
        pytest.skip("psycopg2 is not installed (pip install -e '.[test]')")
    try:
        server = PostgresServer()
    except FileNotFoundError as exc:
        if in_ci():
            pytest.fail(f"{exc} (.ci/run installs it)", pytrace=False)
        pytest.skip(str(exc))
    try:
        yield server
    finally:  # also when the generator is closed early (a test that uses a server of its own)
        server.close()


def new_database(server: PostgresServer) -> str:
    """The URL of a database of its own (its own tables and its own leader lock)."""
    return server.create_database(f"pvedx{next(_names)}")
