"""`eventops tokens`: create, list and revoke API tokens, straight in the metadata store.

The CLI acts with the database's own authority (whoever can reach the store can already do
anything), so it needs no token itself; the actor in the audit events is the OS user.
"""

from __future__ import annotations

import getpass
import json

import typer
from rich.console import Console
from rich.table import Table

from eventops.api.tokens import create_token, list_tokens, parse_expiry, revoke
from eventops.cli.output import err_console, handle_errors
from eventops.config import load_settings
from eventops.store import Store

app = typer.Typer(help="API tokens: create (secret shown once), list, revoke.")


def cli_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:
        return "cli:unknown"


def _store() -> Store:
    store = Store(load_settings().store_url)
    store.upgrade()
    return store


@app.command("create")
@handle_errors
def create(
    name: str = typer.Argument(..., help="Who or what uses the token (the actor in audits)."),
    role: str = typer.Option(..., "--role", "-r", help="viewer, operator or admin."),
    expires: str = typer.Option(None, "--expires", help="Lifetime such as 30d; default never."),
) -> None:
    """Create a token and print its secret: the only time it is shown."""
    store = _store()
    try:
        made = create_token(store, name, role, expires_in=parse_expiry(expires), actor=cli_actor())
    finally:
        store.close()
    err_console.print(f"token {made.id} ({made.role}) created; keep the secret, it is not stored:")
    typer.echo(made.secret)


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json", help="A JSON array.")) -> None:
    """Every token: id, name, role, status, dates (never a secret)."""
    store = _store()
    try:
        tokens = list_tokens(store)
    finally:
        store.close()
    if as_json:
        typer.echo(json.dumps(tokens, indent=2))
        return
    console = Console(highlight=False)
    if not tokens:
        console.print("no API tokens")
        return
    table = Table("id", "name", "role", "status", "created", "expires", "last used")
    for t in tokens:
        table.add_row(
            t["id"], t["name"], t["role"], t["status"], (t["created_at"] or "")[:19],
            (t["expires_at"] or "never")[:19], (t["last_used_at"] or "-")[:19],
        )  # fmt: skip
    console.print(table)


@app.command("revoke")
@handle_errors
def revoke_(
    token_id: str = typer.Argument(..., help="The token's id (see `tokens list`)."),
) -> None:
    """Revoke a token; requests with it get 401 from now on."""
    store = _store()
    try:
        revoked = revoke(store, token_id, actor=cli_actor())
    finally:
        store.close()
    typer.echo(f"token {revoked['id']} ({revoked['name']}) revoked")
