"""`eventops models`: registered models, their versions and aliases, and the decisions that
moved them; promote, reject and roll back by hand.

Decisions made here are recorded like a gate's (a row in `model_decisions` and an event in the
outbox) with the person as actor (`--actor`, default $USER), then relayed to the bus; if the bus
is down they wait in the outbox.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.table import Column, Table

from eventops.cli.output import handle_errors
from eventops.cli.pipelines_cmd import relay_outbox
from eventops.config import load_settings
from eventops.errors import ValidationError
from eventops.registry import Registry
from eventops.registry.views import DecisionView

app = typer.Typer(help="Registered models: list, show, promote, reject, roll back.")

ACTOR_HELP = "Who decides (default: $USER)."


@contextmanager
def open_registry() -> Iterator[Registry]:
    with Registry.from_settings(load_settings()) as registry:
        yield registry


def _console() -> Console:
    return Console(highlight=False, markup=False)


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def _evidence(reason: str | None) -> dict[str, Any]:
    return {"reason": reason} if reason else {}


def _metrics(metrics: dict[str, float], limit: int = 4) -> str:
    shown = [f"{k}={v:.4g}" for k, v in sorted(metrics.items())[:limit]]
    return ", ".join(shown) + (" ..." if len(metrics) > limit else "")


def _done(decision: DecisionView) -> None:
    previous = decision.previous_version or "none"
    typer.echo(
        f"{decision.model}: version {decision.version} {decision.decision} "
        f"({decision.alias}; before: {previous})"
    )


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json", help="A JSON array.")) -> None:
    """Registered models with their aliases and latest version."""
    with open_registry() as registry:
        models = registry.models()
    if as_json:
        typer.echo(json.dumps([m.to_json() for m in models], indent=2))
        return
    table = Table(Column("model", no_wrap=True), "champion", "challenger", "latest", "updated")
    for m in models:
        table.add_row(
            m.name,
            m.aliases.get("champion", ""),
            m.aliases.get("challenger", ""),
            m.latest_version or "",
            str(m.updated_at)[:19] if m.updated_at else "",
        )
    _console().print(table)


@app.command("show")
@handle_errors
def show(
    name: str = typer.Argument(..., help="Model name."),
    limit: int = typer.Option(20, "--limit", help="At most this many decisions, newest first."),
    as_json: bool = typer.Option(False, "--json", help="JSON instead of tables."),
) -> None:
    """A model's versions (status, aliases, metrics, source run) and its decisions."""
    with open_registry() as registry:
        model = registry.model(name)
        decisions = registry.decisions(name, limit=limit)
    if as_json:
        out = model.to_json()
        out["decisions"] = [d.to_json() for d in decisions]
        typer.echo(json.dumps(out, indent=2))
        return
    console = _console()
    aliases = ", ".join(f"{k}={v}" for k, v in sorted(model.aliases.items())) or "none"
    console.print(f"model {model.name}  aliases: {aliases}")
    versions = Table("version", "status", "aliases", "metrics", "run", "created")
    for v in model.versions:
        versions.add_row(
            v.version,
            v.status,
            ", ".join(v.aliases),
            _metrics(v.metrics),
            v.run_id or (v.tracking_run_id or "")[:12],
            str(v.created_at)[:19] if v.created_at else "",
        )
    console.print(versions)
    history = Table(
        "when", "decision", "version", "alias", "before", "actor",
        Column("reason", overflow="fold"),
    )  # fmt: skip
    for d in decisions:
        history.add_row(
            str(d.created_at)[:19],
            d.decision,
            d.version,
            d.alias,
            d.previous_version or "",
            d.actor,
            str(d.evidence.get("reason", "")),
        )
    console.print(history)


@app.command("promote")
@handle_errors
def promote(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to promote."),
    alias: str = typer.Option("champion", "--alias", help="Alias to point at the version."),
    reason: str = typer.Option(None, "--reason", help="Why (kept as evidence)."),
    actor: str = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Point an alias (champion by default) at a version."""
    with open_registry() as registry:
        # An alias MLflow shows but the history lacks (the store failed mid-promotion) may be
        # promoted again: that records the decision.
        current = registry.alias(name, alias)
        if current == str(version).strip() and registry.recorded(name, alias) == current:
            raise ValidationError(
                f"version {version} of {name!r} is already the {alias}",
                field="version",
                rule="not-current",
            )
        decision = registry.promote(
            name, version, actor=_actor(actor), evidence=_evidence(reason), alias=alias
        )
        relay_outbox(registry.store)
    _done(decision)


@app.command("reject")
@handle_errors
def reject(
    name: str = typer.Argument(..., help="Model name."),
    version: str = typer.Argument(..., help="Version to reject."),
    reason: str = typer.Option(None, "--reason", help="Why (kept as evidence)."),
    actor: str = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Refuse a version (a waiting challenger loses its alias)."""
    with open_registry() as registry:
        decision = registry.reject(name, version, actor=_actor(actor), evidence=_evidence(reason))
        relay_outbox(registry.store)
    _done(decision)


@app.command("rollback")
@handle_errors
def rollback(
    name: str = typer.Argument(..., help="Model name."),
    reason: str = typer.Option(None, "--reason", help="Why (kept as evidence)."),
    actor: str = typer.Option(None, "--actor", help=ACTOR_HELP),
) -> None:
    """Give the champion alias back to the previous champion."""
    with open_registry() as registry:
        decision = registry.rollback(name, actor=_actor(actor), evidence=_evidence(reason))
        relay_outbox(registry.store)
    _done(decision)
