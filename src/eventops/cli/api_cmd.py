"""`eventops api serve`: the control-plane REST API under uvicorn.

`--no-auth` makes every caller an admin, so it is refused unless the server listens on a
loopback address only. On loopback, a store without any active admin token gets one, printed
once, so a first local start is usable without another command; on any other address an admin
must create tokens first (`eventops tokens create`), so no secret ends up in a server's logs.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from eventops.cli.output import err_console, handle_errors
from eventops.config import load_settings
from eventops.errors import ValidationError
from eventops.store import Store

app = typer.Typer(help="The control-plane REST API.")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
@handle_errors
def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No tokens (loopback only)."),
    project: Path = typer.Option(
        None, "--project", "-P", help="The project, to request pipeline runs by name."
    ),
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) until interrupted."""
    import uvicorn

    from eventops.api.app import create_api
    from eventops.api.tokens import create_token, has_active_token
    from eventops.cli.tokens_cmd import cli_actor

    loopback = is_loopback(host)
    if no_auth and not loopback:
        raise ValidationError(
            f"--no-auth lets anyone act as admin; bind to 127.0.0.1, not {host}",
            field="--no-auth",
            rule="loopback-only",
        )
    settings = load_settings()
    store = Store(settings.store_url)
    try:
        store.upgrade()
        if not no_auth and loopback and not has_active_token(store, "admin"):
            made = create_token(store, "local-admin", "admin", actor=cli_actor())
            err_console.print(f"no admin token yet: created {made.id}; its secret (shown once):")
            typer.echo(made.secret)
        api = create_api(settings, store=store, auth=not no_auth, project=project)
        uvicorn.run(api, host=host, port=port, log_level="info")
    finally:
        store.close()
