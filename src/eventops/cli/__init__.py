"""The `eventops` command.

Every command resolves settings the same way (eventops.toml + EVENTOPS_*), and every
`EventOpsError` is turned into one red line naming the field and the rule, with the error's own
exit code, instead of a traceback.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from eventops import __version__
from eventops.errors import EventOpsError

F = TypeVar("F", bound=Callable[..., Any])
err_console = Console(stderr=True, highlight=False)


def handle_errors(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EventOpsError as exc:
            rule = f" [dim](rule: {exc.rule})[/dim]" if exc.rule else ""
            err_console.print(f"[red]error:[/red] {exc}{rule}", soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


app = typer.Typer(
    name="eventops",
    help="EventOps: event-driven MLOps. Every change in a model's life is an event.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at DEBUG level."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the EventOps version."""
    typer.echo(__version__)


def _register() -> None:
    from eventops.cli import config_cmd, db_cmd, demo_cmd, events_cmd

    app.add_typer(config_cmd.app, name="config")
    app.add_typer(events_cmd.app, name="events")
    app.add_typer(db_cmd.app, name="db")
    app.command(name="demo")(demo_cmd.demo)


_register()
