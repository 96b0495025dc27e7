"""Shared fixtures: a fresh ledger per test, on SQLite and again on PostgreSQL.

PostgreSQL tests use a fresh schema on the server at 127.0.0.1:5432 (trust auth). When
the server is unreachable they are skipped on a developer's machine, and fail under
CI=true, where a skipped PostgreSQL test would hide a broken production store.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from askfirst import Ledger, load_policy, open_ledger

PG_SERVER = os.environ.get("ASKFIRST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _pg_admin() -> sa.Engine:
    engine = sa.create_engine(PG_SERVER, pool_pre_ping=True)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as e:
        engine.dispose()
        message = f"PostgreSQL at {PG_SERVER} is not reachable: {e.orig}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    return engine


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    engine = _pg_admin()
    yield engine
    engine.dispose()


def fresh_pg_url(admin: sa.Engine) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    base = PG_SERVER.replace("postgresql+psycopg://", "postgresql://")
    return f"{base}?options=-csearch_path%3D{schema}", schema


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    admin = request.getfixturevalue("pg_admin")
    url, schema = fresh_pg_url(admin)
    yield url
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    """A new, empty ledger with the shipped policy."""
    with open_ledger(db_url, load_policy(), create=True) as led:
        yield led


def publish_all(ledger: Ledger, at: int | None = None) -> None:
    """Publish every version of every purpose of the ledger's policy, oldest first: the
    versions in its policy file's history, then its current terms (at ``at``
    microseconds, by default now). A notice can be delivered only once published."""
    from dataclasses import replace

    from askfirst import notices

    policy = ledger.policy
    for name, purpose in policy.purposes.items():
        for old in purpose.history:
            then = purpose.model_copy(
                update={
                    "version": old.version,
                    "categories": old.categories,
                    "recipients": old.recipients,
                    "history": (),
                }
            )
            earlier = replace(policy, purposes={**policy.purposes, name: then})
            notices.publish(
                ledger, earlier, name, changes=f"version {old.version}", actor="system", at=at
            )
        notices.publish(
            ledger, policy, name, changes=f"version {purpose.version}", actor="system", at=at
        )
