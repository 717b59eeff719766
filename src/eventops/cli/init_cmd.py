"""`eventops init PATH`: start a project's repository from the scaffold (see `eventops.scaffold`).

The result passes its own checks as written: `pytest`, `pre-commit run --all-files` and
`eventops apply --dry-run`, so the first pull request of a new project is green.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from eventops.cli.output import handle_errors
from eventops.scaffold import DEFAULT_PLATFORM, render_project


@handle_errors
def init(
    path: Path = typer.Argument(..., help="The new project's folder (created if missing)."),
    name: str = typer.Option(
        None, "--name", "-n", help="Project name (default: the folder's name, as a slug)."
    ),
    platform: str = typer.Option(
        DEFAULT_PLATFORM,
        "--platform",
        help="Where deploy/kustomization.yaml finds the platform's manifests: a relative "
        "path (a checkout or submodule of the platform) or a remote kustomize URL.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Write into a folder that is not empty; replace differing files."
    ),
) -> None:
    """Create a project: pipeline, tests, pre-commit secret scanning, CI, Kustomize overlay."""
    result = render_project(path, name, force, platform=platform)
    console = Console(highlight=False)
    for replaced in result.replaced:
        console.print(f"[yellow]replaced[/yellow] {replaced}")
    console.print(
        f"[green]created[/green] project [cyan]{result.name}[/cyan] in {result.root} "
        f"({len(result.files)} files written)"
    )
    console.print(
        f"next: cd {result.root} && git init && pip install -r requirements-dev.txt && "
        "pre-commit install && pytest && eventops apply --dry-run",
        soft_wrap=True,
    )
