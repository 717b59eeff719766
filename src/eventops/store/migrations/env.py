"""Alembic environment for the metadata store.

`Store.upgrade()` hands over a connection that is already inside a transaction (holding the
migration lock on PostgreSQL), so migrations run there and commit with it. Unlike Alembic's
template this file never calls `logging.config.fileConfig`: it runs inside the application,
whose logging is not Alembic's to reconfigure. Developers who drive Alembic directly (to write
the next revision) can set ``sqlalchemy.url`` in their own alembic.ini instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from eventops.store import alerts as _alert_tables  # noqa: F401  (registers alert_states)
from eventops.store import catalog as _catalog_tables  # noqa: F401  (registers the catalog tables)
from eventops.store import monitoring as _monitoring_tables  # noqa: F401  (registers the monitor tables)
from eventops.store import pipelines as _pipeline_tables  # noqa: F401  (registers the pipeline tables)
from eventops.store import projects as _project_tables  # noqa: F401  (registers the projects table)
from eventops.store import registry as _registry_tables  # noqa: F401  (registers model_decisions)
from eventops.store import tokens as _token_tables  # noqa: F401  (registers api_tokens)
from eventops.store.migrations import VERSION_TABLE
from eventops.store.tables import Base


def configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        literal_binds=connection is None,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        # SQLite can alter a table only by copying it; batch mode writes those copies.
        render_as_batch=True,
        compare_type=True,
    )


def run_on(connection: Connection) -> None:
    configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if context.is_offline_mode():
        configure(url=url)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    if not url:
        raise RuntimeError("run migrations with eventops.store.Store(url).upgrade()")
    from eventops.store.database import Store

    store = Store(url)
    try:
        with store.engine.begin() as connection:
            run_on(connection)
    finally:
        store.close()


main()
