"""`eventops sql`: read-only DuckDB SQL over the lake's datasets and catalog.

A Rich table for people, JSON lines or CSV for pipes. The table stops at `--max-rows` (100
unless given) and says how many rows it left out; JSON and CSV print every row unless limited,
because a script that silently gets the first 100 rows is a bug waiting to happen.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventops.cli.output import handle_errors
from eventops.config import load_settings
from eventops.errors import ValidationError
from eventops.lake.catalog import Lake
from eventops.lake.sql import SqlEngine

TABLE_ROWS = 100
NULL = Text("null", style="dim")


def plain(value: Any) -> Any:
    """A JSON-friendly value: ISO times, NaN as null, decimals and bytes as text."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Decimal | bytes):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    value = plain(value)
    return json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)


def print_table(result: pa.Table, max_rows: int, console: Console) -> None:
    shown = result.slice(0, max_rows)
    table = Table(show_lines=False)
    for name, kind in zip(result.column_names, result.schema.types, strict=True):
        table.add_column(Text.assemble(name, "\n", (str(kind), "dim")), overflow="fold")
    for row in shown.to_pylist():  # Text, not markup: data may hold "[...]"
        table.add_row(*(Text(_cell(v)) if v is not None else NULL for v in row.values()))
    console.print(table)
    more = result.num_rows - shown.num_rows
    suffix = f" ({more} more not shown; use --max-rows)" if more else ""
    console.print(f"{result.num_rows} row(s){suffix}", highlight=False)


def print_json_lines(result: pa.Table) -> None:
    for row in result.to_pylist():
        sys.stdout.write(json.dumps(plain(row), default=str) + "\n")


def print_csv(result: pa.Table) -> None:
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(result.column_names)
    for row in result.to_pylist():
        writer.writerow([_cell(v) for v in row.values()])


@handle_errors
def sql(
    query: str = typer.Argument(
        ...,
        help="SQL to run, or '-' to read it from stdin. Views: one per dataset, "
        "eventops_datasets, eventops_batches, eventops_rejections.",
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per row."),
    as_csv: bool = typer.Option(False, "--csv", help="CSV with a header line."),
    max_rows: int = typer.Option(
        None, "--max-rows", "-n", min=0, help=f"Print at most N rows (table default {TABLE_ROWS})."
    ),
) -> None:
    """Run read-only SQL (DuckDB) over the lake: one view per dataset, plus the catalog."""
    if as_json and as_csv:
        raise ValidationError("give --json or --csv, not both", field="--json", rule="one-of")
    text = sys.stdin.read() if query == "-" else query
    lake = Lake.from_settings(load_settings())
    try:
        with SqlEngine(lake) as engine:
            result = engine.query(text)
    finally:
        lake.store.close()
    limited = result if max_rows is None else result.slice(0, max_rows)
    if as_json:
        print_json_lines(limited)
    elif as_csv:
        print_csv(limited)
    else:
        print_table(result, TABLE_ROWS if max_rows is None else max_rows, Console())
    sys.stdout.flush()
