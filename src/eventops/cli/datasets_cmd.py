"""`eventops datasets`: what the lake holds, declaring datasets, housekeeping and transforms.

Commands that change the catalog (`declare`, `transform run`) publish the events they queued in
the outbox before they return, so a worker listening on the bus reacts at once; if the bus is
down the change is still committed and the events wait in the outbox for the next relay.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError as PydanticValidationError
from rich.console import Console
from rich.table import Table

from eventops.cli.output import err_console, handle_errors
from eventops.config import load_settings
from eventops.errors import EventOpsError, ValidationError
from eventops.events.bus import open_configured_bus
from eventops.lake.catalog import Lake
from eventops.lake.spec import DatasetSpec
from eventops.lake.transforms import lineage as batch_lineage
from eventops.lake.transforms import load_transforms, run_transform
from eventops.quantities import parse_duration
from eventops.store import OutboxRelay

app = typer.Typer(help="Datasets in the lake: list, show, declare, vacuum, lineage, transforms.")
transform_app = typer.Typer(help="Transforms: derived datasets computed batch by batch.")
app.add_typer(transform_app, name="transform")

STAT_KEYS = ("count", "nulls", "min", "max", "mean")


@contextmanager
def open_lake() -> Iterator[Lake]:
    """The configured lake; its store's connections are closed on the way out."""
    lake = Lake.from_settings(load_settings())
    try:
        yield lake
    finally:
        lake.store.close()


def relay_outbox(lake: Lake) -> None:
    try:
        bus = open_configured_bus(load_settings())
        try:
            OutboxRelay(lake.store, bus).relay_once()
        finally:
            bus.close()
    except EventOpsError as exc:
        err_console.print(
            f"[yellow]warning:[/yellow] events stay in the outbox: {exc}", soft_wrap=True
        )


def _when(value: Any) -> str:
    return str(value)[:19].replace("T", " ")


def _console() -> Console:
    """Markup off: names, reasons and sources are data and may hold "[...]"."""
    return Console(highlight=False, markup=False)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


@app.command("list")
@handle_errors
def list_(as_json: bool = typer.Option(False, "--json", help="A JSON array.")) -> None:
    """Every dataset with its schema version, batches, rows and rejected rows."""
    with open_lake() as lake:
        summaries = [lake.summary(name) for name in lake.names()]
    if as_json:
        _print_json(summaries)
        return
    table = Table(title="datasets")
    for column in ("name", "schema", "batches", "rows", "rejected rows", "updated"):
        table.add_column(column, justify="left" if column in ("name", "updated") else "right")
    for s in summaries:
        table.add_row(
            s["name"], f"v{s['schema_version']}", f"{s['batches']:,}", f"{s['rows']:,}",
            f"{s['rows_rejected']:,}", _when(s["updated_at"]),
        )  # fmt: skip
    _console().print(table)


def _describe(lake: Lake, name: str, last: int) -> dict[str, Any]:
    batches = lake.batches(name)
    versions = [
        {"version": v.version, "declared": v.declared, "created_at": v.created_at.isoformat(),
         "columns": v.columns, "changes": v.changes}
        for v in lake.versions(name)
    ]  # fmt: skip
    shown = [
        {"batch_id": b.id, "version": b.version, "rows": b.rows, "size_bytes": b.size_bytes, "uri": b.uri,
         "source": b.source, "lineage": b.lineage or [], "created_at": b.created_at.isoformat()}
        for b in batches[-last:]
    ] if last else []  # fmt: skip
    rejections = [
        {"batch_id": r.batch_id, "rows": r.rows, "reason": r.reason, "quarantine_uri": r.uri,
         "source": r.source, "created_at": r.created_at.isoformat()}
        for r in lake.rejections(name)
    ]  # fmt: skip
    latest = batches[-1] if batches else None
    return {
        **lake.summary(name), "spec": lake.spec(name).model_dump(mode="json"), "schema_versions": versions,
        "batches_shown": shown, "latest_batch": latest.id if latest else None,
        "latest_stats": latest.stats.get("columns", {}) if latest else {}, "rejections": rejections,
    }  # fmt: skip


def _column(table: Table, name: str, *, fold: bool = False) -> None:
    """Short columns never wrap; long text (URIs, reasons) folds only when the terminal is
    too narrow to show it whole."""
    table.add_column(name, overflow="fold", no_wrap=not fold)


def _change_text(change: dict[str, Any]) -> str:
    kind = change.get("change", "?")
    if kind == "added":
        return f"added {change.get('column')} ({change.get('type')})"
    if kind in ("created", "declared"):
        columns = change.get("columns") or change.get("to") or []
        return f"{kind}: " + ", ".join(f"{c['name']} {c['type']}" for c in columns)
    return json.dumps(change, default=str)


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


@app.command("show")
@handle_errors
def show(
    name: str = typer.Argument(..., help="Dataset name."),
    batches: int = typer.Option(
        10, "--batches", min=0, help="How many of the last batches to list."
    ),
    as_json: bool = typer.Option(False, "--json", help="Everything as one JSON object."),
) -> None:
    """Schema versions, last batches, column statistics of the latest batch, rejections."""
    with open_lake() as lake:
        info = _describe(lake, name, batches)
    if as_json:
        _print_json(info)
        return
    console = _console()
    console.print(
        f"{name}: schema v{info['schema_version']}, {info['batches']:,} batches, "
        f"{info['rows']:,} rows, {info['rows_rejected']:,} rejected rows. {info['spec']['description']}"
    )
    versions = Table(title="schema versions")
    for column in ("version", "declared", "created", "changes"):
        versions.add_column(column, overflow="fold")
    for v in info["schema_versions"]:
        changes = "; ".join(_change_text(c) for c in v["changes"])
        versions.add_row(
            f"v{v['version']}", "yes" if v["declared"] else "", _when(v["created_at"]), changes
        )
    console.print(versions)
    shown = Table(title=f"last {len(info['batches_shown'])} batches")
    for column in ("batch", "schema", "rows", "source", "created", "uri"):
        _column(shown, column, fold=column == "uri")
    for b in info["batches_shown"]:
        shown.add_row(
            b["batch_id"],
            f"v{b['version']}",
            f"{b['rows']:,}",
            b["source"],
            _when(b["created_at"]),
            b["uri"],
        )
    console.print(shown)
    stats = Table(title=f"columns of the latest batch {info['latest_batch'] or '(none)'}")
    for column in ("column", "type", *STAT_KEYS, "top categories"):
        stats.add_column(column, overflow="fold")
    for column, values in info["latest_stats"].items():
        top = ", ".join(f"{k}: {n}" for k, n in list(values.get("categories", {}).items())[:3])
        stats.add_row(
            column, values.get("type", ""), *(_number(values.get(k)) for k in STAT_KEYS), top
        )
    console.print(stats)
    refused = Table(title="rejections")
    for column in ("batch", "rows", "created", "reason", "quarantine"):
        _column(refused, column, fold=column in ("reason", "quarantine"))
    for r in info["rejections"]:
        when = _when(r["created_at"])
        refused.add_row(r["batch_id"], f"{r['rows']:,}", when, r["reason"], r["quarantine_uri"])
    console.print(refused)


def read_document(path: Path, *, field: str) -> Any:
    """A TOML or JSON file (by suffix; anything else is tried as JSON, then TOML)."""
    if not path.is_file():
        raise ValidationError(f"{path} does not exist", field=field, rule="exists")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(
                f"{path} is not valid TOML: {exc}", field=field, rule="toml"
            ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if path.suffix.lower() == ".json":
            raise ValidationError(
                f"{path} is not valid JSON: {exc}", field=field, rule="json"
            ) from None
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            raise ValidationError(
                f"{path} is neither JSON nor TOML", field=field, rule="format"
            ) from None


def parse_spec(document: Any) -> DatasetSpec:
    """A DatasetSpec, or a ValidationError naming the first bad field (``columns[1].type``)."""
    try:
        spec = DatasetSpec.model_validate(document)
    except PydanticValidationError as exc:
        error = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(
            "."
        )
        raise ValidationError(error["msg"], field=where or "spec", rule=error["type"]) from None
    spec.arrow_schema()  # unknown column types, named columns.<name>.type
    declared = {c.name for c in spec.columns or []}
    for index, check in enumerate(spec.checks):
        for column in getattr(check, "columns", None) or [getattr(check, "column", None)]:
            if spec.columns is not None and column is not None and column not in declared:
                raise ValidationError(
                    f"check {check.kind} names column {column!r}, which is not declared",
                    field=f"checks[{index}].column", rule="column-exists",
                )  # fmt: skip
    return spec


@app.command("declare")
@handle_errors
def declare(
    spec_file: Path = typer.Argument(..., help="TOML or JSON file holding the dataset spec."),
) -> None:
    """Create or update a dataset from its spec; a changed column list makes a new schema version."""
    spec = parse_spec(read_document(spec_file, field="SPEC_FILE"))
    with open_lake() as lake:
        new = spec.name not in lake.names()
        version = lake.declare(spec)
        relay_outbox(lake)
    if version is not None:
        typer.echo(f"declared {spec.name}: new schema version v{version}")
    elif new:
        typer.echo(f"declared {spec.name} (no columns declared: the first batch sets the schema)")
    else:
        typer.echo(f"declared {spec.name} (schema unchanged)")


@app.command("vacuum")
@handle_errors
def vacuum(
    min_age: str = typer.Option(
        "1h", "--min-age", help="Only files older than this (e.g. 30m, 1h, 2d)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="List orphan files without deleting them."
    ),
) -> None:
    """Delete files under datasets/ that no committed batch points to (crashed writes)."""
    age = timedelta(seconds=parse_duration(min_age, field="--min-age"))
    with open_lake() as lake:
        paths = lake.orphans(age) if dry_run else lake.vacuum(age)
    for path in paths:
        typer.echo(path)
    typer.echo(f"{len(paths)} orphan file(s) {'found' if dry_run else 'deleted'}")


@app.command("lineage")
@handle_errors
def lineage(
    name: str = typer.Argument(..., help="Dataset name."),
    batch_id: str = typer.Argument(..., help="Batch id."),
) -> None:
    """The batches a batch was derived from, back to the original input."""
    with open_lake() as lake:
        chain = batch_lineage(lake, name, batch_id)
    table = Table(title=f"lineage of {name}/{batch_id}")
    for column in ("dataset", "batch", "rows", "source", "created"):
        table.add_column(column, overflow="fold")
    for b in chain:
        table.add_row(b.dataset, b.id, f"{b.rows:,}", b.source, _when(b.created_at))
    _console().print(table)


@transform_app.command("run")
@handle_errors
def transform_run(
    name: str = typer.Argument(..., help="Transform name, as declared in the file."),
    batch_id: str = typer.Option(..., "--batch", help="Batch of the transform's source dataset."),
    file: Path = typer.Option(
        Path("transforms.toml"), "--file", "-f", help="TOML or JSON with [[transforms]]."
    ),
) -> None:
    """Run one transform on one batch now (what the transform worker does on each event)."""
    if not file.is_file():
        raise ValidationError(f"{file} does not exist", field="--file", rule="exists")
    found = {
        t.name: t
        for t in load_transforms(file.read_text(encoding="utf-8"), toml=file.suffix == ".toml")
    }
    if name not in found:
        raise ValidationError(
            f"{file} declares no transform {name!r}", field="NAME", rule="declared"
        )
    with open_lake() as lake:
        result = run_transform(lake, found[name], batch_id)
        relay_outbox(lake)
    if result.duplicate:
        typer.echo(f"already done: {result.dataset} batch {result.batch_id}")
    elif result.uri is None:
        typer.echo(f"rejected: {result.reason} (kept at {result.quarantine_uri})")
    else:
        typer.echo(
            f"{result.dataset} batch {result.batch_id}: {result.rows_accepted:,} rows at {result.uri}"
        )
