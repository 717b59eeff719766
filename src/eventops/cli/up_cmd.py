"""`eventops up`: the whole control plane on one machine, in one command.

It applies the project (so the API and UI know its pipelines, deployments and monitors), makes
sure an admin token exists when the API listens on loopback (printed once), then supervises:

- ``api``: `eventops api serve` (REST API, web UI at /ui/, OpenAPI at /openapi.json);
- ``worker``: `eventops worker --role all` (triggers, runner, transforms, gates, monitors,
  alerts, outbox relay);
- ``serve:<name>``: `eventops serve --deployment <name>` for each of the project's deployments.

SIGTERM or Ctrl-C stops the children in order: each finishes or hands back its in-flight work
(a worker's running pipeline run is resumed by the next worker, see `Runner.resume_stale`).
In production the same commands run as separate Deployments (deploy/k8s).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from eventops.cli.api_cmd import is_loopback
from eventops.cli.output import err_console, handle_errors
from eventops.cli.supervisor import Child, GaveUp, Say, Supervisor
from eventops.config import Settings, load_settings
from eventops.errors import ValidationError
from eventops.events.bus import open_configured_bus, topics_for_patterns

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "bright_red")
console = Console(highlight=False, soft_wrap=True)


def _prefixer() -> Say:
    lock = threading.Lock()
    colours: dict[str, str] = {"up": "bold"}

    def say(name: str, line: str) -> None:
        colour = colours.setdefault(name, COLOURS[(len(colours) - 1) % len(COLOURS)])
        with lock:
            console.print(f"[{colour}]{escape(name):>14}[/{colour}] | {escape(line)}")

    return say


def _narrate(settings: Settings, say: Say, stop: threading.Event) -> threading.Thread:
    """Print each new event on the bus (type, subject): what the loop is doing, as it does it."""

    def tail() -> None:
        try:
            bus = open_configured_bus(settings)
            consumer = bus.consumer(None, topics_for_patterns([], bus.prefix), start="latest")
        except Exception as exc:
            say("events", f"cannot tail the bus: {exc}")
            return
        try:
            while not stop.is_set():
                for record in consumer.poll(0.5):
                    if record.event is not None:
                        say("events", f"{record.event.type} {record.event.subject or ''}".rstrip())
        finally:
            consumer.close()
            bus.close()

    thread = threading.Thread(target=tail, name="up-events", daemon=True)
    thread.start()
    return thread


def _wait_healthy(url: str, supervisor: Supervisor, timeout: float) -> bool:
    """Poll `url` until it answers 200, the supervisor stops, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not supervisor.stop_event.is_set():
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        supervisor.check()
        supervisor.stop_event.wait(0.25)
    return False


@handle_errors
def up(
    project: Path = typer.Option(
        None, "--project", "-P", help="The project (default: `project` in eventops.toml)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address of the API and UI."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="Port of the API and UI."),
    no_auth: bool = typer.Option(False, "--no-auth", help="No tokens (loopback only)."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Run the deployments' servers."),
    step_workers: int = typer.Option(2, "--step-workers", min=1, help="Parallel step processes."),
    timeout: float = typer.Option(None, "--timeout", min=0.1, help="Stop after S seconds."),
    grace: float = typer.Option(30.0, "--grace", min=0.0, help="Seconds each part gets to stop."),
    events: bool = typer.Option(True, "--events/--no-events", help="Print every new event."),
) -> None:
    """Run API, UI, workers and the deployments' servers until SIGTERM / Ctrl-C."""
    from eventops.api.tokens import create_token, has_active_token
    from eventops.apply import apply
    from eventops.cli.tokens_cmd import cli_actor
    from eventops.lake import Lake, LakeStorage
    from eventops.project import load_project, resolve_path
    from eventops.store import Store

    if no_auth and not is_loopback(host):
        raise ValidationError(
            f"--no-auth lets anyone act as admin; bind to 127.0.0.1, not {host}",
            field="--no-auth",
            rule="loopback-only",
        )
    settings = load_settings()
    path = resolve_path(project, settings).resolve()
    loaded = load_project(path)
    store = Store(settings.store_url)
    try:
        store.upgrade()
        applied = apply(loaded, Lake(store, LakeStorage(settings.lake_url)), actor=cli_actor())
        changes = ", ".join(f"{n} to {k}" for k, n in applied.counts().items() if n)
        console.print(f"project [cyan]{loaded.name}[/cyan] applied ({changes or 'unchanged'})")
        if not no_auth and not has_active_token(store, "admin"):
            if is_loopback(host):
                made = create_token(store, "local-admin", "admin", actor=cli_actor())
                console.print(f"no admin token yet: created {made.id}; its secret (shown once):")
                typer.echo(made.secret)
            else:
                err_console.print(
                    "[yellow]warning:[/yellow] no admin token exists; create one with "
                    "`eventops tokens create NAME --role admin`"
                )
    finally:
        store.close()

    me = [sys.executable, "-m", "eventops"]
    api_argv = [*me, "api", "serve", "--host", host, "--port", str(port), "--project", str(path)]
    children = [
        Child("api", [*api_argv, "--no-auth"] if no_auth else api_argv),
        Child(
            "worker",
            [*me, "worker", "--project", str(path), "--workers", str(step_workers)],
        ),
    ]
    if serve:
        children += [
            Child(f"serve:{name}", [*me, "serve", "--deployment", name, "--project", str(path)])
            for name in sorted(loaded.deployments)
        ]
    say = _prefixer()
    supervisor = Supervisor(children, say, grace=grace)
    previous = _install_signals(supervisor)
    reason = "stopped"
    try:
        supervisor.start()
        if events:
            _narrate(settings, say, supervisor.stop_event)
        where = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
        base = f"http://{where}:{port}"
        if _wait_healthy(f"{base}/health", supervisor, 60.0):
            console.print(
                f"[bold]EventOps is up[/bold]: UI {base}/ui/ · API {base}/docs · "
                f"{len(children) - 2} deployment server(s) · Ctrl-C to stop"
            )
            for name in sorted(loaded.deployments) if serve else []:
                d = loaded.deployments[name]
                console.print(
                    f"  deployment {name}: http://{d.host}:{d.port} ({d.model}@{d.alias})"
                )
        finished = supervisor.run(timeout)
        reason = "stopped" if finished else f"timeout after {timeout:g}s"
    except GaveUp as exc:
        reason = f"gave up: {exc}"
        supervisor.failure = str(exc)
    finally:
        codes = supervisor.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    summary = ", ".join(f"{n} {_exit_text(c)}" for n, c in codes.items())
    console.print(f"eventops up {reason}; exit codes: {summary}")
    if supervisor.failure:
        raise typer.Exit(1)


def _exit_text(code: int | None) -> str:
    """uvicorn re-raises the SIGTERM it handled after a clean shutdown: that is a clean stop."""
    if code in (0, -signal.SIGTERM):
        return "stopped"
    return "not started" if code is None else f"exit {code}"


def _install_signals(supervisor: Supervisor) -> dict[int, Any]:
    """SIGTERM / SIGINT stop the supervisor (the children then get SIGTERM, in order)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not supervisor.stop_event.is_set():
            err_console.print(f"{signal.Signals(signum).name}: stopping every part")
        supervisor.stop_event.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        previous[signum] = signal.signal(signum, on_signal)
    return previous
