"""Output helpers shared by the `eventops` commands.

Every `EventOpsError` becomes one red line naming the field and the rule, with the error's own
exit code, instead of a traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

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


def counts_table(title: str, rows: list[tuple[str, int]], seconds: float) -> Any:
    """The summary a long-running command prints when it stops: counts, then its duration."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, f"{value:,}")
    table.add_row("seconds", f"{seconds:.1f}")
    return table
