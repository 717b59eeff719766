"""Store URLs, errors and SQLite settings: what needs no server (the contract suite covers the
behaviour on both databases in tests/integration/test_store_contract.py)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from eventops.errors import BackendUnavailable, ConfigError
from eventops.store import Store, parse_store_url
from eventops.store.migrations import MIGRATIONS_DIR
from store_db import STATE, widgets

UNREACHABLE = "postgresql://postgres:s3cret-pw@127.0.0.1:1/eventops"  # pragma: allowlist secret


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@db:5432/x", "postgresql+psycopg"),
        ("postgres://u@db/x", "postgresql+psycopg"),
        ("postgresql+psycopg://u@db/x", "postgresql+psycopg"),
        ("sqlite:///rel/meta.db", "sqlite"),
        ("sqlite+pysqlite:////abs/meta.db", "sqlite"),
    ],
)
def test_supported_urls_pin_the_driver(url: str, driver: str) -> None:
    assert parse_store_url(url).drivername == driver


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("not a url", "url"),
        ("", "url"),
        ("mysql://u:pw@db/x", "scheme"),  # pragma: allowlist secret
        ("postgresql+psycopg2://u@db/x", "scheme"),
        ("sqlite://", "sqlite-file"),
        ("sqlite:///:memory:", "sqlite-file"),
    ],
)
def test_bad_urls_name_the_setting_and_the_rule(url: str, rule: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Store(url)
    assert raised.value.field == "store.url"
    assert raised.value.rule == rule
    assert str(raised.value).startswith("store.url: ")


def test_postgres_without_its_driver_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the extra sees
    with pytest.raises(ConfigError) as raised:
        Store("postgresql://u@db/x")
    assert raised.value.rule == "extra-installed"
    assert "eventops[postgres]" in str(raised.value)


def test_a_url_that_does_not_parse_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        Store("postgresql://u:hunter2@db:notaport/x")  # pragma: allowlist secret
    assert "hunter2" not in str(raised.value)


def test_the_password_is_hidden_and_can_come_separately() -> None:
    store = Store("postgresql://app@db.internal:5432/eventops", password="p@ss/w:rd")
    assert store.url.password == "p@ss/w:rd"  # pragma: allowlist secret
    assert "p@ss" not in repr(store)
    assert "p@ss" not in store.safe_url
    assert store.safe_url == "postgresql+psycopg://app:***@db.internal:5432/eventops"


@pytest.mark.parametrize("operation", ["check", "upgrade", "current_revision", "session"])
def test_an_unreachable_database_is_backend_unavailable(operation: str) -> None:
    store = Store(UNREACHABLE, connect_timeout=2)

    def attempt() -> None:
        if operation == "session":
            with store.session() as session:
                session.execute(select(1))
        else:
            getattr(store, operation)()

    with pytest.raises(BackendUnavailable) as raised:
        attempt()
    message = str(raised.value)
    assert raised.value.field == "store.url"
    assert "127.0.0.1:1" in message
    assert "s3cret-pw" not in message
    assert "***" in message


def test_sqlite_runs_in_wal_with_a_busy_timeout(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/meta.db", busy_timeout=7)
    with store, store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_creates_the_folder_of_its_file(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path}/a/b/meta.db") as store:
        store.upgrade()
    assert (tmp_path / "a" / "b" / "meta.db").is_file()


def test_sqlite_writers_queue_instead_of_failing(tmp_path: Path) -> None:
    """Read-then-write transactions from many threads: each waits its turn, none gets BUSY."""
    store = Store(f"sqlite:///{tmp_path}/meta.db")
    STATE.create_all(store.engine)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def write(worker: int) -> None:
        try:
            start.wait(10)
            for i in range(25):
                with store.session() as session:
                    seen = session.scalar(select(func.count()).select_from(widgets))
                    session.execute(insert(widgets).values(name=f"{worker}-{i}-{seen}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    with store.session() as session:
        names = list(session.scalars(select(widgets.c.name)))
    # Serialised transactions each saw all earlier ones: the counts are exactly 0..99.
    assert sorted(int(name.rsplit("-", 1)[1]) for name in names) == list(range(100))
    store.close()


def test_the_migrations_ship_inside_the_package() -> None:
    assert MIGRATIONS_DIR.parent.name == "store"
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    assert list((MIGRATIONS_DIR / "versions").glob("r0001_*.py"))
