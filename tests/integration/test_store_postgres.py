"""What only PostgreSQL does: row locks that let producers go on while a relay holds its batch,
concurrent migrations, concurrent claims of one event, and the test-database helper itself."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

import store_db
from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.store import OutboxRelay, Store, add_events, idempotent
from store_db import BlockingBus, effects, migrated_store, postgres_database, read_events

pytestmark = pytest.mark.postgres


@pytest.fixture
def database_url() -> Iterator[str]:
    with postgres_database() as url:
        yield url


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with migrated_store(database_url) as store:
        yield store


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    bus = open_bus(f"sqlite:///{tmp_path}/events.db")
    yield bus
    bus.close()


def events_about(subject: str, count: int) -> list[Event]:
    return [
        Event(type="dataset.batch.ingested", subject=subject, data={"i": i}) for i in range(count)
    ]


def test_producers_commit_while_a_relay_holds_its_batch(store: Store, bus: Bus) -> None:
    held, later = events_about("s", 5), events_about("s", 3)
    with store.session() as session:
        add_events(session, held)
    blocking = BlockingBus(bus)
    results: dict[str, int] = {}
    holder = threading.Thread(
        target=lambda: results.update(first=OutboxRelay(store, blocking).relay_once())  # type: ignore[arg-type]
    )
    holder.start()
    try:
        assert blocking.entered.wait(10)
        # FOR UPDATE locks existing rows only: a producer's insert does not wait for the relay.
        with store.session() as session:
            add_events(session, later)
        waiter = threading.Thread(
            target=lambda: results.update(second=OutboxRelay(store, bus).relay_once())
        )
        waiter.start()
    finally:
        blocking.release.set()
    holder.join(30)
    waiter.join(30)
    assert results == {"first": 5, "second": 3}
    assert read_events(bus, 8) == held + later


def test_processes_starting_together_migrate_once(database_url: str) -> None:
    stores = [Store(database_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[BaseException] = []

    def upgrade(store: Store) -> None:
        try:
            start.wait(10)
            store.upgrade()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=upgrade, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert not errors
        assert {store.current_revision() for store in stores} == {
            store.head_revision() for store in stores
        }
    finally:
        for store in stores:
            store.close()


def test_concurrent_deliveries_of_one_event_apply_it_once(store: Store) -> None:
    """The second claim waits on the first transaction's row, then sees it committed."""
    event = Event(type="model.version.promoted", subject="churn")
    inside = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def apply(event: Event, session: Session) -> None:
        session.execute(insert(effects).values(consumer="c", event_id=event.id))
        calls.append(threading.current_thread().name)
        inside.set()
        assert release.wait(30)

    handler = idempotent(store, "deployer", apply)
    first = threading.Thread(target=handler, args=(event,), name="first")
    second = threading.Thread(target=handler, args=(event,), name="second")
    first.start()
    assert inside.wait(10)
    second.start()
    release.set()
    first.join(30)
    second.join(30)
    assert calls == ["first"]
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(effects)) == 1


def test_the_helper_drops_its_database() -> None:
    with postgres_database() as url:
        name = url.rsplit("/", 1)[1]
        with Store(url) as store:
            store.check()
    with store_db.admin_connection() as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    assert row is None


def test_the_helper_fails_loudly_without_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_db, "ADMIN_CONNINFO", "host=127.0.0.1 port=1 user=postgres")
    with pytest.raises(RuntimeError, match="PostgreSQL is required"), postgres_database():
        pass


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_writers_racing_to_create_a_dataset_all_commit(
    backend: str, database_url: str, tmp_path: Path
) -> None:
    """Model servers capture their first predictions at the same moment: each one's batch
    must land, whoever creates the dataset and its first schema version."""
    import pyarrow as pa

    from eventops.lake import Lake, LakeStorage

    url = database_url if backend == "postgres" else f"sqlite:///{tmp_path}/race.db"
    with migrated_store(url) as store:
        lake = Lake(store, LakeStorage(str(tmp_path / "lake")))
        start = threading.Barrier(4)
        errors: list[BaseException] = []

        def write(n: int) -> None:
            start.wait()
            try:
                lake.commit_batch(
                    "captured", pa.table({"x": [float(n)] * 10, "writer": [n] * 10}), source="t"
                )
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        table = lake.read("captured")
        assert table.num_rows == 40
        assert sorted(set(table["writer"].to_pylist())) == [0, 1, 2, 3]
