"""SQL over the lake: dataset views over committed batches, catalog views, the read-only rule."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventops.errors import ValidationError
from eventops.lake import ColumnSpec, DatasetSpec, Lake, LakeStorage, Range
from eventops.lake.sql import SqlEngine, query, read_only_statements
from eventops.store import Store


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield Lake(store, LakeStorage(str(tmp_path / "lake")))
    store.close()


def two_versions(lake: Lake) -> tuple[str, str]:
    """churn v1 (id, age), then v2 adds plan."""
    first = lake.commit_batch("churn", pa.table({"id": [1, 2], "age": [30, 40]}), source="test")
    second = lake.commit_batch(
        "churn", pa.table({"id": [3], "age": [50], "plan": ["pro"]}), source="test"
    )
    assert (first.schema_version, second.schema_version) == (1, 2)
    return first.batch_id, second.batch_id


def test_schema_versions_are_unioned_by_name(lake: Lake) -> None:
    two_versions(lake)
    with SqlEngine(lake) as sql:
        table = sql.query("SELECT * FROM churn ORDER BY id")
    # no hive 'date' column from the date=YYYY-MM-DD folders: the view is the dataset's columns
    assert table.column_names == ["id", "age", "plan"]
    assert table.to_pylist() == [
        {"id": 1, "age": 30, "plan": None},
        {"id": 2, "age": 40, "plan": None},
        {"id": 3, "age": 50, "plan": "pro"},
    ]


def test_catalog_views_describe_datasets_batches_and_rejections(lake: Lake) -> None:
    old, new = two_versions(lake)
    lake.declare(DatasetSpec(name="scores", checks=[Range(column="score", min=0)]))
    bad = lake.commit_batch("scores", pa.table({"score": [1.0, -5.0, 2.0]}), source="test")
    assert bad.rows_rejected == 1
    with SqlEngine(lake) as sql:
        datasets = sql.query(
            "SELECT name, schema_version, batches, rows, rows_rejected FROM eventops_datasets "
            "ORDER BY name"
        ).to_pylist()
        batches = sql.query(
            "SELECT batch_id, version, rows, uri FROM eventops_batches "
            "WHERE dataset = 'churn' ORDER BY created_at"
        ).to_pylist()
        rejections = sql.query("SELECT dataset, batch_id, rows, uri FROM eventops_rejections")
        views = sql.views()
    assert datasets == [
        {"name": "churn", "schema_version": 2, "batches": 2, "rows": 3, "rows_rejected": 0},
        {"name": "scores", "schema_version": 1, "batches": 1, "rows": 2, "rows_rejected": 1},
    ]
    assert [(b["batch_id"], b["version"], b["rows"]) for b in batches] == [(old, 1, 2), (new, 2, 1)]
    assert batches[0]["uri"] == lake.batches("churn")[0].uri
    assert rejections.to_pylist() == [
        {"dataset": "scores", "batch_id": bad.batch_id, "rows": 1, "uri": bad.quarantine_uri}
    ]
    assert {"churn", "scores", "eventops_datasets", "eventops_batches"} <= set(views)


def test_a_dataset_with_no_batch_is_an_empty_view_of_its_schema(lake: Lake) -> None:
    columns = [ColumnSpec(name="x", type="int64"), ColumnSpec(name="y", type="string")]
    lake.declare(DatasetSpec(name="declared", columns=columns))
    lake.declare(DatasetSpec(name="bare"))  # no columns, no batch: no schema to show yet
    result = query(lake, "SELECT * FROM declared")
    assert result.num_rows == 0
    assert result.column_names == ["x", "y"]
    assert result.schema.field("x").type == pa.int64()
    with pytest.raises(ValidationError) as info:
        query(lake, "SELECT * FROM bare")
    assert info.value.field == "sql" and info.value.rule == "catalog"


def test_only_committed_batches_are_visible_and_refresh_sees_new_ones(lake: Lake) -> None:
    two_versions(lake)
    orphan = lake.storage.path("datasets", "churn", "v1", "date=2026-01-01", "orphan.parquet")
    lake.storage.write_parquet(orphan, pa.table({"id": [99], "age": [1]}))
    with SqlEngine(lake) as sql:
        assert sql.query("SELECT count(*) AS n FROM churn").to_pylist() == [{"n": 3}]
        lake.commit_batch("churn", pa.table({"id": [4], "age": [60]}), source="test")
        assert sql.query("SELECT count(*) AS n FROM churn").to_pylist() == [{"n": 3}]
        sql.refresh()
        assert sql.query("SELECT count(*) AS n FROM churn").to_pylist() == [{"n": 4}]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO churn VALUES (9, 9, 'x')",
        "CREATE TABLE copy AS SELECT * FROM churn",
        "COPY churn TO '{out}'",
        "DROP VIEW churn",
        "SELECT 1; DROP VIEW churn",
        "ATTACH '{out}' AS other",
        "SET threads = 1",
        "PRAGMA enable_profiling",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1",
        "INSTALL httpfs",
    ],
)
def test_statements_that_write_are_refused(lake: Lake, tmp_path: Path, statement: str) -> None:
    two_versions(lake)
    out = tmp_path / "written.out"
    with SqlEngine(lake) as sql:
        with pytest.raises(ValidationError) as info:
            sql.query(statement.format(out=out))
        assert info.value.field == "sql"
        assert info.value.rule == "read-only"
        assert sql.query("SELECT count(*) AS n FROM churn").to_pylist() == [{"n": 3}]
    assert not out.exists()


@pytest.mark.parametrize(
    "statement",
    [
        "WITH a AS (SELECT * FROM churn) SELECT count(*) FROM a",
        "FROM churn",
        "SHOW TABLES",
        "DESCRIBE churn",
        "SUMMARIZE churn",
        "EXPLAIN SELECT * FROM churn",
        "PRAGMA table_info('churn')",
        "SELECT 1; SELECT 2",
    ],
)
def test_queries_are_allowed(lake: Lake, statement: str) -> None:
    two_versions(lake)
    assert query(lake, statement).num_rows > 0


def test_bad_sql_names_the_field_and_keeps_duckdbs_message(lake: Lake) -> None:
    two_versions(lake)
    with pytest.raises(ValidationError) as info:
        query(lake, "SELEC id FROM churn")
    assert info.value.field == "sql" and info.value.rule == "parser"
    assert "syntax error" in info.value.message
    with pytest.raises(ValidationError) as info:
        query(lake, "SELECT no_such_column FROM churn")
    assert info.value.field == "sql" and "no_such_column" in info.value.message
    with pytest.raises(ValidationError) as info:
        read_only_statements("   ")
    assert info.value.rule == "required"


def test_files_outside_the_lakes_batches_cannot_be_read(lake: Lake, tmp_path: Path) -> None:
    """The second lock: even a query DuckDB calls a SELECT cannot read other files."""
    two_versions(lake)
    secret = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"password": ["hunter2"]}), secret)
    with pytest.raises(ValidationError) as info:
        query(lake, f"SELECT * FROM read_parquet('{secret}')")
    assert info.value.field == "sql" and info.value.rule == "permission"


def test_an_s3_lake_is_read_through_its_own_fsspec_filesystem(tmp_path: Path) -> None:
    """DuckDB gets the lake's s3fs filesystem (no httpfs); the moto server stands in for S3."""
    from moto_server import aws_env, start_moto

    with start_moto() as server:
        bucket = f"sql-{uuid.uuid4().hex[:8]}"
        server.create_bucket(bucket)
        with aws_env(server):
            store = Store(f"sqlite:///{tmp_path}/s.db")
            store.upgrade()
            lake = Lake(store, LakeStorage(f"s3://{bucket}/lake"))
            two_versions(lake)
            assert lake.batches("churn")[0].uri.startswith(f"s3://{bucket}/lake/datasets/churn/")
            result = query(lake, "SELECT id, plan FROM churn ORDER BY id")
            store.close()
    assert result.to_pylist() == [
        {"id": 1, "plan": None},
        {"id": 2, "plan": None},
        {"id": 3, "plan": "pro"},
    ]
