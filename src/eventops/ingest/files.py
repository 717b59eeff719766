"""File ingestion: CSV, newline-delimited JSON and Parquet, from paths or standard input.

Files are parsed with Arrow's multi-threaded readers (the fast path) and committed through
`Lake.commit_batch` in slices of `batch_rows`, so a large file becomes several batches rather
than one huge one. Input that cannot be parsed at all is not dropped: CSV lines with the wrong
number of fields and NDJSON lines that are not JSON objects are collected and kept in
quarantine with their line number and the reason (`Lake.quarantine_raw`), and the rest of the
file is ingested.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from eventops.errors import ValidationError
from eventops.lake import IngestResult, Lake

Format = Literal["csv", "ndjson", "parquet"]
SUFFIXES: dict[str, Format] = {
    ".csv": "csv", ".json": "ndjson", ".jsonl": "ndjson", ".ndjson": "ndjson",
    ".parquet": "parquet", ".pq": "parquet",
}  # fmt: skip
DEFAULT_BATCH_ROWS = 1_000_000


@dataclass
class ParsedInput:
    table: pa.Table
    bad_records: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FileReport:
    source: str
    format: Format
    rows_read: int = 0
    results: list[IngestResult] = field(default_factory=list)

    @property
    def rows_accepted(self) -> int:
        return sum(r.rows_accepted for r in self.results)

    @property
    def rows_rejected(self) -> int:
        return sum(r.rows_rejected for r in self.results)


def detect_format(name: str, head: bytes, explicit: str | None = None) -> Format:
    if explicit:
        if explicit not in ("csv", "ndjson", "parquet"):
            raise ValidationError(
                f"unknown format {explicit!r}; use csv, ndjson or parquet",
                field="--format",
                rule="enum",
            )
        return explicit  # type: ignore[return-value]
    suffix = Path(name).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.lstrip()[:1] in (b"{", b"["):
        return "ndjson"
    if name != "-" and suffix:
        raise ValidationError(
            f"cannot tell the format of {name!r} from its suffix; pass --format csv|ndjson|parquet",
            field="--format",
            rule="detectable",
        )
    return "csv"


def parse(data: bytes, fmt: Format) -> ParsedInput:
    if fmt == "parquet":
        try:
            return ParsedInput(pq.read_table(io.BytesIO(data)))
        except pa.ArrowInvalid as exc:
            raise ValidationError(
                f"not a readable Parquet file: {exc}", field="file", rule="parquet"
            ) from None
    if fmt == "csv":
        return _parse_csv(data)
    return _parse_ndjson(data)


def _parse_csv(data: bytes) -> ParsedInput:
    bad: list[dict[str, Any]] = []

    def keep_bad_row(row: Any) -> str:
        message = f"expected {row.expected_columns} fields, got {row.actual_columns}"
        record: dict[str, Any] = {
            "text": row.text,
            "errors": [{"field": "*", "rule": "column-count", "message": message}],
        }
        if row.number is not None:  # Arrow knows line numbers only when parsing serially
            record["line"] = row.number
        bad.append(record)
        return "skip"

    try:
        table = pacsv.read_csv(
            io.BytesIO(data), parse_options=pacsv.ParseOptions(invalid_row_handler=keep_bad_row)
        )
    except pa.ArrowInvalid as exc:
        raise ValidationError(f"not a readable CSV file: {exc}", field="file", rule="csv") from None
    return ParsedInput(table, bad)


def _parse_ndjson(data: bytes) -> ParsedInput:
    stripped = data.lstrip()
    if stripped.startswith(b"["):
        try:
            records = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"not valid JSON: {exc}", field="file", rule="json") from None
        return _from_records(enumerate(records, start=1))
    try:
        return ParsedInput(pajson.read_json(io.BytesIO(data)))
    except pa.ArrowInvalid:
        pass  # a bad line or mixed types: take the careful path that keeps what is good

    def lines() -> Iterator[tuple[int, Any]]:
        for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                yield number, _BadLine(line, f"not valid JSON ({exc.msg})")

    return _from_records(lines())


@dataclass
class _BadLine:
    text: str
    message: str


def _from_records(numbered: Iterator[tuple[int, Any]] | Any) -> ParsedInput:
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for number, record in numbered:
        if isinstance(record, dict):
            good.append(record)
        elif isinstance(record, _BadLine):
            bad.append(
                {
                    "line": number,
                    "text": record.text,
                    "errors": [{"field": "*", "rule": "json", "message": record.message}],
                }
            )
        else:
            bad.append({"line": number, "text": json.dumps(record), "errors": [
                {"field": "*", "rule": "object", "message": "a record must be a JSON object"}
            ]})  # fmt: skip
    try:
        table = pa.Table.from_pylist(good)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValidationError(
            f"records do not form a table: {exc}", field="file", rule="consistent-types"
        ) from None
    return ParsedInput(table, bad)


def read_source(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if not path.is_file():
        raise ValidationError(f"no such file: {name}", field="file", rule="exists")
    return path.read_bytes()


def ingest_file(
    lake: Lake,
    dataset: str,
    name: str,
    *,
    fmt: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_batch: Callable[[IngestResult, int], None] | None = None,
) -> FileReport:
    """Parse one file (or '-') and commit it as one or more batches."""
    data = read_source(name)
    kind = detect_format(name, data[:64], fmt)
    parsed = parse(data, kind)
    report = FileReport(
        source=name, format=kind, rows_read=parsed.table.num_rows + len(parsed.bad_records)
    )
    source = f"file:{Path(name).name}" if name != "-" else "stdin"
    if parsed.bad_records:
        reason = f"{len(parsed.bad_records)} unparseable record(s) in {name}"
        report.results.append(
            lake.quarantine_raw(dataset, parsed.bad_records, reason, source=source)
        )
    for start in range(0, max(parsed.table.num_rows, 1), batch_rows):
        piece = parsed.table.slice(start, batch_rows)
        if piece.num_rows == 0:
            break
        result = lake.commit_batch(dataset, piece, source=source)
        report.results.append(result)
        if on_batch:
            on_batch(result, piece.num_rows)
    return report
