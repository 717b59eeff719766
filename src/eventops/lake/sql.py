"""SQL over the lake: DuckDB views of the committed batches and of the catalog.

Each dataset becomes a view named after it over exactly the Parquet files that have a manifest
row, so SQL sees what every other reader sees: no half-written file, no orphan. All schema
versions are read with ``union_by_name``, so a column added in version 2 is NULL in version-1
batches instead of breaking the query. The catalog itself is queryable as ``eventops_datasets``,
``eventops_batches`` and ``eventops_rejections``.

Views are a snapshot of the manifest taken when the engine is built; `refresh()` takes a new one.

The engine is read-only, twice over. Each statement is classified by DuckDB's own parser and
only queries are run (SELECT / WITH / FROM / VALUES / SHOW / DESCRIBE / SUMMARIZE, EXPLAIN of a
query, ``PRAGMA table_info`` and ``show_tables``). Then DuckDB itself is locked down: external
access is off except for the batch files, and the configuration is locked, so a statement that
slipped past the classifier still cannot read or write other files or turn the lock off.

Object stores are read through the lake's own fsspec filesystem (``register_filesystem``), with
the credentials the lake already uses; DuckDB's httpfs extension is not needed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import duckdb
import pyarrow as pa
from sqlalchemy import select

from eventops.errors import NotFound, ValidationError
from eventops.lake.catalog import Lake
from eventops.store import BatchRow, DatasetRow, RejectionRow

CATALOG_VIEWS = ("eventops_datasets", "eventops_batches", "eventops_rejections")
_QUERY_TYPES = {duckdb.StatementType.SELECT}
_EXPLAIN = re.compile(r"^\s*explain\s+(analy[sz]e\s+)?(\([^)]*\)\s*)?", re.IGNORECASE)
_PRAGMAS = re.compile(
    r"^\s*pragma\s+(table_info|show_tables|show_tables_expanded|show)\b", re.IGNORECASE
)
_UTC = pa.timestamp("us", tz="UTC")


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def duckdb_error(exc: duckdb.Error) -> ValidationError:
    """A DuckDB error as a ValidationError on field ``sql``; the rule names the error kind."""
    kind = type(exc).__name__.removesuffix("Exception").removesuffix("Error").lower() or "duckdb"
    return ValidationError(str(exc).strip(), field="sql", rule=kind)


def read_only_statements(sql: str) -> list[str]:
    """Split `sql` into statements and refuse the whole text if any of them is not a query."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise duckdb_error(exc) from None
    if not statements:
        raise ValidationError("no SQL statement given", field="sql", rule="required")
    texts = []
    for statement in statements:
        text = statement.query.strip().rstrip(";").strip()
        if not _is_query(statement.type, text):
            first = text.split(None, 1)[0].upper() if text else "?"
            raise ValidationError(
                f"{first} statements are not allowed: SQL over the lake is read-only "
                "(SELECT, WITH, SHOW, DESCRIBE, SUMMARIZE, EXPLAIN, PRAGMA table_info)",
                field="sql",
                rule="read-only",
            )
        texts.append(text)
    return texts


def _is_query(kind: duckdb.StatementType, text: str) -> bool:
    if kind in _QUERY_TYPES:
        return True
    if kind == duckdb.StatementType.PRAGMA:
        return bool(_PRAGMAS.match(text))
    if kind == duckdb.StatementType.EXPLAIN:  # EXPLAIN ANALYZE runs its statement
        inner = duckdb.extract_statements(_EXPLAIN.sub("", text, count=1))
        return len(inner) == 1 and inner[0].type in _QUERY_TYPES
    return False


class SqlEngine:
    """An in-memory DuckDB with one view per dataset and the catalog views; read-only queries.

    `tables` are extra Arrow tables visible by name (a transform's ``batch``); `aliases` are
    extra names for dataset views (a transform's ``source``). Both win over a dataset of the
    same name.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        tables: Mapping[str, pa.Table] | None = None,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.lake = lake
        self.tables = dict(tables or {})
        self.aliases = dict(aliases or {})
        self.conn = self._build()

    def refresh(self) -> None:
        """Rebuild the views from the manifest as it is now (new batches become visible)."""
        fresh = self._build()
        self.conn.close()
        self.conn = fresh

    def query(self, sql: str) -> pa.Table:
        """Run read-only SQL; the result of the last statement as an Arrow table."""
        result = pa.table({})
        for statement in read_only_statements(sql):
            try:
                relation = self.conn.sql(statement)
                result = relation.to_arrow_table() if relation is not None else pa.table({})
            except duckdb.Error as exc:
                raise duckdb_error(exc) from None
        return result

    def views(self) -> list[str]:
        """Every name a query can read: dataset views, catalog views, extra tables."""
        rows = self.conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        return sorted(str(r[0]) for r in rows)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SqlEngine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ building
    def _build(self) -> duckdb.DuckDBPyConnection:
        conn = duckdb.connect(":memory:")
        try:
            self._populate(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _populate(self, conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("SET TimeZone = 'UTC'")
        storage = self.lake.storage
        if not storage.local and not conn.filesystem_is_registered(storage.protocol):
            conn.register_filesystem(storage.fs)
        datasets, batches, rejections = self._catalog()
        versions = {d["name"]: d["schema_version"] for d in datasets}
        files: dict[str, list[str]] = {name: [] for name in versions}
        for batch in batches:
            files[batch["dataset"]].append(self._location(batch["uri"]))
        for name in self.aliases.values():
            if name not in versions:
                raise NotFound(f"no dataset named {name!r}", field="dataset", rule="exists")
        views = {n: n for n in versions if n not in {*self.tables, *self.aliases, *CATALOG_VIEWS}}
        for view, name in {**views, **self.aliases}.items():
            self._dataset_view(conn, view, name, files[name], versions[name])
        catalog = zip(CATALOG_VIEWS, (datasets, batches, rejections), _CATALOG_SCHEMAS, strict=True)
        for view, rows, schema in catalog:
            conn.register(view, pa.Table.from_pylist(rows, schema))
        for name, table in self.tables.items():
            conn.register(name, table)
        allowed = ", ".join(quote_literal(path) for paths in files.values() for path in paths)
        conn.execute(f"SET allowed_paths = [{allowed}]")
        conn.execute("SET enable_external_access = false")
        conn.execute("SET lock_configuration = true")

    def _location(self, uri: str) -> str:
        """What DuckDB opens: a plain path on local disk, the full URI on a registered fsspec."""
        storage = self.lake.storage
        return storage.path_of(uri) if storage.local else storage.uri(storage.path_of(uri))

    def _dataset_view(
        self, conn: duckdb.DuckDBPyConnection, view: str, name: str, paths: list[str], version: int
    ) -> None:
        """All batches unioned by column name; no batch yet: an empty table of the current
        schema; no schema either (declared without columns, never ingested): nothing."""
        if paths:
            listed = ", ".join(quote_literal(p) for p in paths)
            options = "union_by_name = true, hive_partitioning = false"  # date=... is layout only
            conn.execute(
                f"CREATE VIEW {quote_identifier(view)} AS "
                f"SELECT * FROM read_parquet([{listed}], {options})"
            )
        elif version:
            conn.register(view, self.lake.schema(name, version).empty_table())

    def _catalog(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        """Datasets, batches and rejections in three store queries, whatever the lake's size."""
        with self.lake.store.session() as session:
            rows = list(session.scalars(select(DatasetRow).order_by(DatasetRow.name)))
            found = session.scalars(select(BatchRow).order_by(BatchRow.created_at, BatchRow.id))
            batches: list[dict[str, Any]] = [
                {"dataset": b.dataset, "batch_id": b.id, "version": b.version, "rows": b.rows,
                 "size_bytes": b.size_bytes, "uri": b.uri, "source": b.source,
                 "lineage": list(b.lineage or []), "created_at": b.created_at}
                for b in found
            ]  # fmt: skip
            refused = session.scalars(select(RejectionRow).order_by(RejectionRow.id))
            rejections: list[dict[str, Any]] = [
                {"dataset": r.dataset, "batch_id": r.batch_id, "rows": r.rows, "reason": r.reason,
                 "uri": r.uri, "source": r.source, "created_at": r.created_at}
                for r in refused
            ]  # fmt: skip
        totals: dict[str, list[int]] = {row.name: [0, 0, 0, 0] for row in rows}
        for b in batches:
            total = totals.setdefault(b["dataset"], [0, 0, 0, 0])
            total[0] += 1
            total[1] += b["rows"]
            total[2] += b["size_bytes"]
        for r in rejections:
            totals.setdefault(r["dataset"], [0, 0, 0, 0])[3] += r["rows"]
        datasets = [
            {"name": row.name, "description": row.spec.get("description", ""),
             "schema_version": row.current_version, "batches": totals[row.name][0],
             "rows": totals[row.name][1], "bytes": totals[row.name][2],
             "rows_rejected": totals[row.name][3], "created_at": row.created_at,
             "updated_at": row.updated_at}
            for row in rows
        ]  # fmt: skip
        return datasets, batches, rejections


_DATASETS = pa.schema(
    [("name", pa.string()), ("description", pa.string()), ("schema_version", pa.int32()),
     ("batches", pa.int64()), ("rows", pa.int64()), ("bytes", pa.int64()),
     ("rows_rejected", pa.int64()), ("created_at", _UTC), ("updated_at", _UTC)]
)  # fmt: skip
_BATCHES = pa.schema(
    [("dataset", pa.string()), ("batch_id", pa.string()), ("version", pa.int32()),
     ("rows", pa.int64()), ("size_bytes", pa.int64()), ("uri", pa.string()), ("source", pa.string()),
     ("lineage", pa.list_(pa.string())), ("created_at", _UTC)]
)  # fmt: skip
_REJECTIONS = pa.schema(
    [("dataset", pa.string()), ("batch_id", pa.string()), ("rows", pa.int64()),
     ("reason", pa.string()), ("uri", pa.string()), ("source", pa.string()), ("created_at", _UTC)]
)  # fmt: skip
_CATALOG_SCHEMAS = (_DATASETS, _BATCHES, _REJECTIONS)


def query(lake: Lake, sql: str) -> pa.Table:
    """One read-only query over a fresh snapshot of the lake."""
    with SqlEngine(lake) as engine:
        return engine.query(sql)


__all__ = ["CATALOG_VIEWS", "SqlEngine", "query", "read_only_statements"]
