"""`eventops db`: the metadata store's schema migrations."""

from __future__ import annotations

import typer

from eventops.cli.output import handle_errors
from eventops.config import load_settings, redact_url
from eventops.store import Store

app = typer.Typer(help="Metadata store: migrations (Alembic).")


@app.command("upgrade")
@handle_errors
def upgrade() -> None:
    """Migrate the metadata store to the newest schema (safe to run repeatedly)."""
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    typer.echo(f"{redact_url(settings.store_url)}: at revision {store.current_revision()}")


@app.command("current")
@handle_errors
def current() -> None:
    """Print the store's current migration revision."""
    settings = load_settings()
    typer.echo(Store(settings.store_url).current_revision() or "(empty: run `eventops db upgrade`)")
