"""The metadata store: one SQLAlchemy engine for SQLite (embedded) or PostgreSQL (production).

Why these engine settings:

* SQLite runs in WAL mode so readers never block the writer, with a busy timeout so concurrent
  writers queue instead of failing. Every transaction starts with ``BEGIN IMMEDIATE``: a
  deferred transaction that reads and then writes fails at once with "database is locked" when
  another connection wrote in between (the busy timeout does not help there), and taking the
  write lock up front also serialises outbox relays, which SQLite cannot do with FOR UPDATE.
* PostgreSQL connections are pinged before use, so a pool that outlived a database restart or a
  failover hands out a live connection instead of an error.

Connection failures surface as `BackendUnavailable` naming the URL without its password.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker

from eventops.errors import BackendUnavailable, ConfigError
from eventops.store.migrations import MIGRATIONS_DIR, VERSION_TABLE

log = logging.getLogger(__name__)

FIELD = "store.url"
POSTGRES_DRIVERS = ("postgresql", "postgres", "postgresql+psycopg")
SQLITE_DRIVERS = ("sqlite", "sqlite+pysqlite")
# pg_advisory_xact_lock key held while migrating, so processes that start together upgrade one
# at a time instead of racing to CREATE the same tables. Any constant unique to EventOps works.
MIGRATION_LOCK_KEY = 0x4556_4F50  # "EVOP"
CONNECTION_ERRORS = (OperationalError, InterfaceError)


def parse_store_url(url: str | URL, *, password: str | None = None) -> URL:
    """Validate a store URL and pin the PostgreSQL driver to psycopg 3 (the one we ship)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The text is not echoed: a URL that failed to parse may still hold a password.
        raise ConfigError(
            "not a database URL; write sqlite:///path/eventops.db or "
            "postgresql+psycopg://user@host:5432/dbname",
            field=FIELD,
            rule="url",
        ) from None
    if password is not None:
        parsed = parsed.set(password=password)
    if parsed.drivername in POSTGRES_DRIVERS:
        return parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername in SQLITE_DRIVERS:
        if parsed.database in (None, "", ":memory:") or "memory" in parsed.query.values():
            raise ConfigError(
                "an in-memory SQLite database is private to one connection and lost on exit; "
                "give a file path, e.g. sqlite:///.eventops/eventops.db",
                field=FIELD,
                rule="sqlite-file",
            )
        return parsed.set(drivername="sqlite")
    raise ConfigError(
        f"unsupported database {parsed.drivername!r}; use sqlite:///path.db or "
        "postgresql+psycopg://user@host:5432/dbname",
        field=FIELD,
        rule="scheme",
    )


class Store:
    """An open metadata store. Cheap to create: nothing connects until first use or `check()`."""

    def __init__(
        self,
        url: str | URL,
        *,
        password: str | None = None,
        busy_timeout: float = 30.0,
        connect_timeout: float = 10.0,
        echo: bool = False,
    ) -> None:
        self.url = parse_store_url(url, password=password)
        self.safe_url = self.url.render_as_string(hide_password=True)
        self.engine = self._create_engine(busy_timeout, connect_timeout, echo)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self.engine.dialect.name

    def __repr__(self) -> str:
        return f"Store({self.safe_url!r})"

    def _create_engine(self, busy_timeout: float, connect_timeout: float, echo: bool) -> Engine:
        if self.url.drivername == "sqlite":
            assert self.url.database is not None
            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(self.url, echo=echo, connect_args={"timeout": busy_timeout})
            busy_ms = int(busy_timeout * 1000)

            def on_connect(dbapi_connection: Any, _record: Any) -> None:
                # Hand transaction control to the "begin" hook below (SQLAlchemy's recipe).
                dbapi_connection.isolation_level = None
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()

            def on_begin(connection: Connection) -> None:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

            event.listen(engine, "connect", on_connect)
            event.listen(engine, "begin", on_begin)
            return engine
        connect_args: dict[str, Any] = {}
        if "connect_timeout" not in self.url.query:
            connect_args["connect_timeout"] = max(1, round(connect_timeout))
        if "application_name" not in self.url.query:
            connect_args["application_name"] = "eventops"
        try:
            return create_engine(self.url, echo=echo, pool_pre_ping=True, connect_args=connect_args)
        except ImportError as exc:  # the driver is an optional extra
            raise ConfigError(
                "PostgreSQL needs psycopg 3: pip install 'eventops[postgres]'",
                field=FIELD,
                rule="extra-installed",
            ) from exc

    # ------------------------------------------------------------------ errors
    def unavailable(self, exc: DBAPIError) -> BackendUnavailable:
        """The error to raise for a failed connection or a refused operation.

        Built from the driver's message, not SQLAlchemy's, which appends the statement and its
        parameters (state and events may be sensitive).
        """
        reason = " ".join(str(exc.orig or exc.__class__.__name__).split())[:500]
        return BackendUnavailable(
            f"the metadata store at {self.safe_url} is unavailable: {reason}",
            field=FIELD,
            rule="reachable",
        )

    # ------------------------------------------------------------------ use
    def check(self) -> None:
        """Connect once; raises BackendUnavailable when the database cannot be reached."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed if the block ends normally, rolled back if it raises."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except CONNECTION_ERRORS as exc:
            _rollback_quietly(session)
            raise self.unavailable(exc) from exc
        except BaseException:
            _rollback_quietly(session)
            raise
        finally:
            session.close()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ migrations
    def alembic_config(self) -> Config:
        """Alembic's configuration built in code; it never holds the URL (nor its password)."""
        config = Config()
        # ConfigParser interpolation treats "%" as special, and paths may contain one.
        config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to `revision`; safe to call on every start, from many processes."""
        config = self.alembic_config()
        try:
            with self.engine.begin() as connection:
                if self.dialect == "postgresql":
                    connection.execute(
                        text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                    )
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def current_revision(self) -> str | None:
        """The revision the database is at; None before the first `upgrade()`."""
        try:
            with self.engine.connect() as connection:
                context = MigrationContext.configure(
                    connection, opts={"version_table": VERSION_TABLE}
                )
                return context.get_current_revision()
        except CONNECTION_ERRORS as exc:
            raise self.unavailable(exc) from exc

    def head_revision(self) -> str | None:
        """The newest revision this version of EventOps ships."""
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()


def _rollback_quietly(session: Session) -> None:
    """Roll back without hiding the error being handled (the connection may be gone)."""
    try:
        session.rollback()
    except SQLAlchemyError as exc:
        log.debug("rollback failed after an error: %s", type(exc).__name__)
