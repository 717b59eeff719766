"""Throw-away PostgreSQL databases for the store tests, and the helpers those tests share.

Each caller gets a database of its own (``eventops_test_<hex>``) on the server CI provides, so
tests never see each other's rows and can run in parallel. If the server is not there the
helper raises: a missing required service must fail the run, never skip it.

Override the server with EVENTOPS_TEST_POSTGRES (a libpq conninfo or URL for a superuser
connection to an existing database, default ``host=127.0.0.1 port=5432 user=postgres
dbname=postgres``).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.engine import URL

from eventops.errors import PublishError
from eventops.events.bus import Bus, Record
from eventops.events.envelope import Event
from eventops.store import OutboxEntry, Store, add_events

ADMIN_CONNINFO = os.environ.get(
    "EVENTOPS_TEST_POSTGRES", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_CONNINFO, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        params = conninfo_to_dict(ADMIN_CONNINFO)
        where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        raise RuntimeError(
            f"PostgreSQL is required for these tests and is not reachable at {where} "
            f"(set EVENTOPS_TEST_POSTGRES to point elsewhere): {exc}"
        ) from exc


def database_url(name: str) -> str:
    params = conninfo_to_dict(ADMIN_CONNINFO)
    url = URL.create(
        "postgresql+psycopg",
        username=str(params.get("user", "postgres")),
        password=str(params["password"]) if params.get("password") else None,
        host=str(params.get("host", "127.0.0.1")),
        port=int(params.get("port") or 5432),
        database=name,
    )
    return url.render_as_string(hide_password=False)


def drop_database(conn: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a fresh database, yield its SQLAlchemy URL, drop it afterwards."""
    name = f"eventops_test_{uuid.uuid4().hex[:16]}"
    with admin_connection() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_url(name)
    finally:
        with admin_connection() as conn:
            drop_database(conn, name)


# ---------------------------------------------------------------------- stores under test
# The contract suites run once per database; PostgreSQL runs behind its marker.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def database_for(kind: str, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of `kind` ("sqlite" or "postgres"), removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path}/meta.db"
    else:
        with postgres_database() as url:
            yield url


@contextmanager
def migrated_store(url: str) -> Iterator[Store]:
    """A store at the head revision, plus the application tables below."""
    store = Store(url)
    try:
        store.upgrade()
        STATE.create_all(store.engine)
        yield store
    finally:
        store.close()


# Application state that tests change together with an outbox event (a capability's own table).
STATE = MetaData()
widgets = Table(
    "widgets",
    STATE,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
)
effects = Table(
    "effects",
    STATE,
    Column("id", Integer, primary_key=True),
    Column("consumer", String(100), nullable=False),
    Column("event_id", String(255), nullable=False),
)


def make_events(count: int) -> list[Event]:
    """Events of three types (three topics) about four subjects (spread over partitions)."""
    types = ("dataset.batch.ingested", "pipeline.run.requested", "model.version.registered")
    return [
        Event(type=types[i % 3], subject=f"subject-{i % 4}", data={"i": i}) for i in range(count)
    ]


def queue(store: Store, events: Iterable[Event]) -> None:
    with store.session() as session:
        add_events(session, events)


def outbox_rows(store: Store) -> list[OutboxEntry]:
    with store.session() as session:
        return list(session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)))


def count_rows(store: Store, table: Any) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def read_events(bus: Bus, expected: int, timeout: float = 10.0) -> list[Event]:
    """Every event on the bus in log order, waiting up to `timeout` for `expected` of them.

    Publishing is synchronous, so once `expected` have arrived a short extra poll is enough to
    catch any surplus (a duplicate the test must see).
    """
    consumer = bus.consumer(None, None, start="earliest")
    try:
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        while len(records) < expected and time.monotonic() < deadline:
            records += consumer.poll(0.2, 10_000)
        records += consumer.poll(0.2, 10_000)
    finally:
        consumer.close()
    records.sort(key=lambda record: record.offset)
    events = [record.event for record in records]
    assert all(event is not None for event in events)
    return [event for event in events if event is not None]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(0.01)


class StubBus:
    """Stands in for a bus that is down, or that comes back after `failures` refusals."""

    url = "stub://"
    prefix = "eventops"

    def __init__(self, inner: Bus | None = None, failures: int = 10**9) -> None:
        self.inner = inner
        self.failures = failures
        self.calls = 0

    def publish(self, events: Iterable[Event], *, topic: str | None = None) -> int:
        self.calls += 1
        if self.calls <= self.failures or self.inner is None:
            raise PublishError("broker down")
        return self.inner.publish(events, topic=topic)


class BlockingBus:
    """Publishes only when released, so a test can act while a relay holds its batch."""

    url = "blocking://"
    prefix = "eventops"

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def publish(self, events: Iterable[Event], *, topic: str | None = None) -> int:
        self.entered.set()
        assert self.release.wait(30), "the test never released the blocked publish"
        return self.inner.publish(events, topic=topic)
