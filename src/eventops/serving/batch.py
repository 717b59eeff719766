"""Batch transform: score a file or a lake dataset in chunks and write Parquet.

`predict_file` reads its input in chunks of `chunk_rows` (Parquet and lake datasets stream
batch by batch; CSV streams block by block; JSON lines are read whole), checks each chunk's
columns against the model's signature (a missing required column is refused naming the column
before anything is written), predicts it with the MLflow pyfunc, and appends the prediction
columns (``prediction``; ``prediction_0..k`` for several outputs per row; ``prediction_<name>``
for named outputs) to the input's columns. The output is written to a temporary name and
renamed when complete, so a failed run leaves no half file; its Parquet metadata records the
model URI and version (``eventops.model_uri``, ``eventops.model_version``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from eventops.errors import NotFound, ValidationError
from eventops.serving.models import LoadedModel, load_model, normalise
from eventops.serving.schema import InputSchema

Progress = Callable[[int, int | None], None]  # rows done, rows in all (None: unknown)
PARQUET = (".parquet", ".pq")
CSV = (".csv",)
JSONL = (".jsonl", ".ndjson", ".json")


@dataclass(frozen=True)
class BatchResult:
    output: str
    rows: int
    chunks: int
    model_uri: str
    model_version: str
    seconds: float
    prediction_columns: list[str]


def predict_file(
    model_uri: str,
    input: str | Path,
    output: str | Path,
    *,
    chunk_rows: int = 10_000,
    lake: Any = None,
    tracking_uri: str | None = None,
    progress: Progress | None = None,
    model: LoadedModel | None = None,
) -> BatchResult:
    """Score `input` (a Parquet/CSV/JSON-lines path, or a dataset of `lake`) into `output`."""
    if chunk_rows < 1:
        raise ValidationError("must be at least 1", field="chunk_rows", rule="minimum")
    started = time.perf_counter()
    chunks, total = open_chunks(input, chunk_rows, lake)
    loaded = model or load_model(model_uri, tracking_uri=tracking_uri, warm=False)
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    writer: pq.ParquetWriter | None = None
    rows = count = 0
    predicted: list[str] = []
    try:
        for chunk in chunks:
            if chunk.num_rows == 0:
                continue
            scored, predicted = score_chunk(loaded, chunk, rows)
            if writer is None:
                metadata = {
                    b"eventops.model_uri": loaded.ref.pinned.encode(),
                    b"eventops.model_version": loaded.version.encode(),
                }
                schema = scored.schema.with_metadata(metadata)
                writer = pq.ParquetWriter(str(temporary), schema, compression="zstd")
            writer.write_table(_conform(scored, writer.schema))
            rows += chunk.num_rows
            count += 1
            if progress is not None:
                progress(rows, total)
        if writer is None:
            raise ValidationError(f"{input} has no rows to score", field="input", rule="non-empty")
        writer.close()
        writer = None
        os.replace(temporary, target)
    finally:
        if writer is not None:
            writer.close()
        temporary.unlink(missing_ok=True)
    return BatchResult(
        str(target), rows, count, loaded.ref.pinned, loaded.version,
        time.perf_counter() - started, predicted,
    )  # fmt: skip


def open_chunks(
    source: str | Path, chunk_rows: int, lake: Any = None
) -> tuple[Iterator[pa.Table], int | None]:
    """The input's chunks and its row count when known."""
    path = Path(source)
    if path.exists():
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in PARQUET:
            return _parquet_chunks([str(path)], chunk_rows)
        if suffix in CSV:
            return _csv_chunks(path, chunk_rows), None
        if suffix in JSONL:
            import pyarrow.json as pajson

            return _slices(pajson.read_json(str(path)), chunk_rows)
        raise ValidationError(
            f"cannot read {path.name}: use .parquet, .csv, .jsonl or a lake dataset name",
            field="input",
            rule="format",
        )
    if lake is not None and str(source) in lake.names():
        files = lake.files(str(source))
        return _parquet_chunks(files, chunk_rows, fs=lake.storage.fs)
    where = " or a dataset of the lake" if lake is not None else ""
    raise NotFound(f"{source} is not a file{where}", field="input", rule="exists")


def _parquet_chunks(
    paths: list[str], chunk_rows: int, fs: Any = None
) -> tuple[Iterator[pa.Table], int | None]:
    files = []
    for path in paths:
        if fs is None and Path(path).is_dir():
            files += sorted(str(p) for p in Path(path).rglob("*.parquet"))
        else:
            files.append(path)

    def opened(path: str) -> Any:
        return fs.open(path, "rb") if fs is not None else open(path, "rb")

    total = 0
    for path in files:
        with opened(path) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows

    def chunks() -> Iterator[pa.Table]:
        for path in files:
            with opened(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=chunk_rows):
                    yield pa.Table.from_batches([batch])

    return chunks(), total


def _csv_chunks(path: Path, chunk_rows: int) -> Iterator[pa.Table]:
    import pyarrow.csv as pacsv

    reader = pacsv.open_csv(str(path))
    pending: list[pa.RecordBatch] = []
    size = 0
    for batch in reader:
        pending.append(batch)
        size += batch.num_rows
        while size >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows)
            rest = table.slice(chunk_rows)
            pending, size = rest.to_batches(), rest.num_rows
    if size:
        yield pa.Table.from_batches(pending)


def _slices(table: pa.Table, chunk_rows: int) -> tuple[Iterator[pa.Table], int]:
    def chunks() -> Iterator[pa.Table]:
        for start in range(0, table.num_rows, chunk_rows):
            yield table.slice(start, chunk_rows)

    return chunks(), table.num_rows


def score_chunk(model: LoadedModel, chunk: pa.Table, offset: int) -> tuple[pa.Table, list[str]]:
    """The chunk with its prediction columns; ValidationError names the column and rows."""
    check_columns(model.schema, chunk.column_names)
    frame = chunk.to_pandas()
    if model.schema.columns:
        frame = frame[model.schema.names]
    try:
        outputs = normalise(model.predict(frame))
    except Exception as exc:
        text = " ".join(str(exc).split())[:500]
        raise ValidationError(
            f"rows {offset}-{offset + chunk.num_rows - 1}: the model refused them: {text}",
            field="input",
            rule="predict",
        ) from None
    columns = _prediction_columns(outputs, set(chunk.column_names))
    scored = chunk
    for name, values in columns.items():
        if len(values) != chunk.num_rows:
            raise ValidationError(
                f"the model returned {len(values)} rows for {chunk.num_rows}",
                field="output",
                rule="rows",
            )
        scored = scored.append_column(name, pa.array(_plain(values)))
    return scored, list(columns)


def check_columns(schema: InputSchema, available: list[str]) -> None:
    have = set(available)
    for column in schema.columns:
        if column.required and column.name not in have:
            raise ValidationError(
                f"the input has no column {column.name!r}, which the model's signature requires",
                field=column.name,
                rule="required",
            )


def _prediction_columns(outputs: Any, taken: set[str]) -> dict[str, Any]:
    if isinstance(outputs, dict):
        named = {f"prediction_{k}": v for k, v in outputs.items()}
    elif outputs.ndim == 2:
        named = {f"prediction_{j}": outputs[:, j] for j in range(outputs.shape[1])}
    else:
        named = {"prediction": outputs}
    out = {}
    for name, values in named.items():
        final = name
        while final in taken:
            final = f"{final}_"
        out[final] = values
    return out


def _plain(values: Any) -> Any:
    array = np.asarray(values)
    return array.tolist() if array.dtype == object else array


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A later chunk in the first chunk's schema (a lake dataset's versions may differ)."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns = [
        table[f.name].cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema)


__all__ = ["BatchResult", "check_columns", "open_chunks", "predict_file", "score_chunk"]
