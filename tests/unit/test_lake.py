"""The lake on a local folder: layout, atomic commits, schema evolution, checks, quarantine,
statistics and the events that announce each batch."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from sqlalchemy import select

from eventops.errors import BackendUnavailable, ValidationError
from eventops.events.envelope import Event
from eventops.lake import (
    AllowedValues,
    ColumnSpec,
    CustomPredicate,
    DatasetSpec,
    Lake,
    LakeStorage,
    NotNull,
    Range,
    Unique,
)
from eventops.store import BatchRow, OutboxEntry, RejectionRow, SchemaVersionRow, Store

LAYOUT = re.compile(
    r"/datasets/(?P<name>[a-z][a-z0-9_]*)/v(?P<version>\d+)/"
    r"date=(?P<date>\d{4}-\d{2}-\d{2})/(?P<batch>[\w-]+)\.parquet$"
)


# ---------------------------------------------------------------------- custom predicates
# Loaded by the lake through "module:function" references built from __name__, so they work
# whatever name pytest imported this module under.
def total_is_even(table: pa.Table) -> pa.ChunkedArray:
    """One bool per row: True for a good row."""
    return pc.equal(pc.bit_wise_and(table.column("total"), 1), 0)


def returns_too_few(table: pa.Table) -> list[bool]:
    return [True]


# ---------------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def lake(store: Store, root: Path) -> Lake:
    return Lake(store, LakeStorage(str(root)))


def outbox(lake: Lake, type_: str | None = None) -> list[Event]:
    with lake.store.session() as session:
        query = select(OutboxEntry).order_by(OutboxEntry.id)
        if type_ is not None:
            query = query.where(OutboxEntry.type == type_)
        return [Event.from_json(row.payload) for row in session.scalars(query)]


def quarantine_lines(lake: Lake, uri: str) -> list[dict[str, Any]]:
    text = lake.storage.read_bytes(lake.storage.path_of(uri)).decode()
    return [json.loads(line) for line in text.splitlines() if line]


def errors_by_row(lines: list[dict[str, Any]], key: str) -> dict[Any, set[tuple[str, str]]]:
    return {line["row"][key]: {(e["field"], e["rule"]) for e in line["errors"]} for line in lines}


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# ---------------------------------------------------------------------- layout, atomic write
def test_a_batch_is_one_zstd_parquet_file_in_the_documented_layout(lake: Lake, root: Path) -> None:
    before = datetime.now(UTC).strftime("%Y-%m-%d")
    table = pa.table({"id": [1, 2, 3], "plan": ["a", "b", None]})
    result = lake.commit_batch("churn", table, source="test", batch_id="b-1")
    after = datetime.now(UTC).strftime("%Y-%m-%d")

    assert result.uri is not None
    match = LAYOUT.search(result.uri)
    assert match is not None, result.uri
    assert (match["name"], match["version"], match["batch"]) == ("churn", "1", "b-1")
    assert match["date"] in (before, after)
    path = Path(lake.storage.path_of(result.uri))
    assert path.parent.parent.parent.parent == root / "datasets"
    assert all_files(root) == [path]  # nothing else: no temporary file, no quarantine
    metadata = pq.ParquetFile(path).metadata
    assert {metadata.row_group(0).column(i).compression for i in range(2)} == {"ZSTD"}
    assert pq.read_table(path).equals(table)
    assert lake.read("churn").equals(table)


def test_no_temporary_files_are_left_after_commits(lake: Lake, root: Path) -> None:
    for i in range(3):
        lake.commit_batch("churn", pa.table({"id": [i]}), source="test")
    files = all_files(root)
    assert len(files) == 3
    assert not [f for f in files if ".tmp-" in f.name]
    assert lake.orphans(min_age=timedelta(0)) == []


class Crash(RuntimeError):
    """Stands for the process dying at this point."""


@contextmanager
def crash_after_the_file_write(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Make the first store transaction after `write_parquet` fail, as a crash would."""
    written: list[str] = []
    write_parquet = lake.storage.write_parquet
    session = lake.store.session

    def writing(path: str, table: pa.Table) -> int:
        size = write_parquet(path, table)
        written.append(path)
        return size

    def crashing() -> Any:
        if written:
            raise Crash("killed before the manifest commit")
        return session()

    with monkeypatch.context() as patch:
        patch.setattr(lake.storage, "write_parquet", writing)
        patch.setattr(lake.store, "session", crashing)
        yield written


def test_a_crash_before_the_manifest_commit_leaves_the_batch_invisible(
    lake: Lake, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.commit_batch("churn", pa.table({"id": [1, 2]}), source="test", batch_id="kept")
    events_before = outbox(lake)
    with crash_after_the_file_write(lake, monkeypatch) as written, pytest.raises(Crash):
        lake.commit_batch("churn", pa.table({"id": [3, 4]}), source="test", batch_id="lost")

    assert len(written) == 1 and Path(written[0]).is_file()  # the file is there ...
    assert lake.read("churn").column("id").to_pylist() == [1, 2]  # ... and nobody reads it
    assert [b.id for b in lake.batches("churn")] == ["kept"]
    assert outbox(lake) == events_before
    assert lake.orphans() == []  # younger than the default age: may be a commit in progress
    assert lake.orphans(min_age=timedelta(0)) == written
    assert lake.vacuum(min_age=timedelta(0)) == written
    assert not Path(written[0]).exists()
    assert lake.orphans(min_age=timedelta(0)) == []
    assert lake.read("churn").column("id").to_pylist() == [1, 2]


def test_a_retried_batch_after_a_crash_commits_and_is_no_orphan(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake.commit_batch("churn", pa.table({"id": [1]}), source="test")
    batch = pa.table({"id": [2]})
    with crash_after_the_file_write(lake, monkeypatch), pytest.raises(Crash):
        lake.commit_batch("churn", batch, source="test", batch_id="again")
    result = lake.commit_batch("churn", batch, source="test", batch_id="again")
    assert result.rows_accepted == 1 and not result.duplicate
    assert lake.orphans(min_age=timedelta(0)) == []
    assert sorted(lake.read("churn").column("id").to_pylist()) == [1, 2]


def test_a_stream_checkpoint_commits_with_its_batch_and_not_without(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = "kafka:orders"
    lake.commit_batch(
        "orders", pa.table({"id": [1]}), source=source, checkpoint=(source, {"0": "41"})
    )
    assert lake.checkpoint(source) == {"0": "41"}
    with crash_after_the_file_write(lake, monkeypatch), pytest.raises(Crash):
        lake.commit_batch(
            "orders",
            pa.table({"id": [2]}),
            source=source,
            checkpoint=(source, {"0": "42", "1": "7"}),
        )
    assert lake.checkpoint(source) == {"0": "41"}  # a restart re-reads what the crash lost
    lake.commit_batch(
        "orders", pa.table({"id": [2]}), source=source, checkpoint=(source, {"0": "42", "1": "7"})
    )
    assert lake.checkpoint(source) == {"0": "42", "1": "7"}


def test_a_crash_in_the_first_batch_leaves_an_empty_dataset(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    with crash_after_the_file_write(lake, monkeypatch), pytest.raises(Crash):
        lake.commit_batch("fresh", pa.table({"id": [1, 2]}), source="test")
    assert lake.read("fresh").num_rows == 0
    assert len(lake.vacuum(min_age=timedelta(0))) == 1


def test_an_interrupted_file_write_never_shows_under_the_final_name(
    lake: Lake, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_rename(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(lake.storage.fs, "mv", broken_rename)
    with pytest.raises(BackendUnavailable):
        lake.commit_batch("churn", pa.table({"id": [1]}), source="test", batch_id="torn")
    monkeypatch.undo()

    leftovers = all_files(root)
    assert len(leftovers) == 1 and ".tmp-" in leftovers[0].name
    assert not [f for f in leftovers if f.name == "torn.parquet"]
    assert lake.batches("churn") == []
    assert lake.vacuum(min_age=timedelta(0)) == [str(leftovers[0])]
    assert all_files(root) == []


# ---------------------------------------------------------------------- schemas
def test_the_first_batch_declares_the_schema(lake: Lake) -> None:
    table = pa.table(
        {
            "id": pa.array([1, 2], pa.int64()),
            "score": pa.array([0.5, 1.0], pa.float64()),
            "name": pa.array(["a", "b"], pa.large_string()),
            "empty": pa.nulls(2),
            "flag": [True, False],
        },
        schema=pa.schema(
            [
                pa.field("id", pa.int64(), nullable=False),
                pa.field("score", pa.float64()),
                pa.field("name", pa.large_string()),
                pa.field("empty", pa.null()),
                pa.field("flag", pa.bool_()),
            ]
        ),
    )
    result = lake.commit_batch("people", table, source="test")

    assert result.schema_version == 1
    expected = pa.schema(
        [
            pa.field("id", pa.int64()),  # inferred: a batch cannot prove a column is required
            pa.field("score", pa.float64()),
            pa.field("name", pa.string()),
            pa.field("empty", pa.string()),
            pa.field("flag", pa.bool_()),
        ]
    )
    assert lake.schema("people").equals(expected)
    assert lake.read("people").schema.equals(expected)
    [version] = lake.versions("people")
    assert version.version == 1 and not version.declared
    assert version.changes[0]["change"] == "created"
    [changed] = outbox(lake, "dataset.schema.changed")
    assert changed.data["from_version"] is None and changed.data["to_version"] == 1


def test_a_new_column_is_a_new_version_and_an_event(lake: Lake) -> None:
    lake.commit_batch("events", pa.table({"id": [1], "x": [1.0]}), source="test")
    result = lake.commit_batch(
        "events", pa.table({"id": [2], "x": [2.0], "y": ["new"]}), source="test"
    )

    assert result.schema_version == 2
    assert "/datasets/events/v2/" in (result.uri or "")
    assert lake.schema("events").names == ["id", "x", "y"]
    assert lake.schema("events", 1).names == ["id", "x"]
    changes = [e.data for e in outbox(lake, "dataset.schema.changed")]
    assert [(c["from_version"], c["to_version"]) for c in changes] == [(None, 1), (1, 2)]
    assert changes[1]["changes"] == [{"change": "added", "column": "y", "type": "string"}]
    assert [e.type for e in result.events] == ["dataset.schema.changed", "dataset.batch.ingested"]
    read = lake.read("events").sort_by("id")
    assert read.column("y").to_pylist() == [None, "new"]


def test_a_missing_nullable_column_is_filled_with_nulls(lake: Lake) -> None:
    lake.commit_batch("events", pa.table({"id": [1], "x": [1.0]}), source="test")
    result = lake.commit_batch("events", pa.table({"id": [2, 3]}), source="test")

    assert result.schema_version == 1 and result.rows_accepted == 2
    written = pq.read_table(lake.storage.path_of(result.uri or ""))
    assert written.schema.equals(lake.schema("events"))
    assert written.column("x").to_pylist() == [None, None]
    assert len(outbox(lake, "dataset.schema.changed")) == 1


def test_a_missing_required_column_rejects_the_whole_batch(lake: Lake) -> None:
    lake.declare(
        DatasetSpec(
            name="orders",
            columns=[
                ColumnSpec(name="id", type="int64", nullable=False),
                ColumnSpec(name="note", type="string"),
            ],
        )
    )
    batch = pa.table({"note": ["a", "b", "c"]})
    result = lake.commit_batch("orders", batch, source="upload", batch_id="no-id")

    assert result.rejected_batch and result.uri is None
    assert (result.rows_accepted, result.rows_rejected) == (0, 3)
    assert result.reason is not None and "id" in result.reason and "required" in result.reason
    assert result.quarantine_uri is not None
    assert "/quarantine/orders/" in result.quarantine_uri
    assert pq.read_table(lake.storage.path_of(result.quarantine_uri)).equals(batch)
    [rejection] = lake.rejections("orders")
    assert (rejection.batch_id, rejection.rows, rejection.uri, rejection.source) == (
        "no-id", 3, result.quarantine_uri, "upload",
    )  # fmt: skip
    [event] = outbox(lake, "dataset.batch.rejected")
    assert event.data == {
        "dataset": "orders", "batch_id": "no-id", "rows_rejected": 3,
        "reason": result.reason, "quarantine_uri": result.quarantine_uri,
    }  # fmt: skip
    assert lake.batches("orders") == []
    assert outbox(lake, "dataset.batch.ingested") == []


def test_a_type_change_is_rejected_unless_declared(lake: Lake) -> None:
    lake.commit_batch("m", pa.table({"a": pa.array([1, 2], pa.int64())}), source="test")
    changed = pa.table({"a": [1.5, 2.5]})

    refused = lake.commit_batch("m", changed, source="test", batch_id="float-1")
    assert refused.rejected_batch
    assert refused.reason is not None and "a: type changed" in refused.reason
    assert lake.schema("m").field("a").type == pa.int64()

    version = lake.declare(DatasetSpec(name="m", columns=[ColumnSpec(name="a", type="double")]))
    assert version == 2
    accepted = lake.commit_batch("m", changed, source="test", batch_id="float-2")
    assert accepted.schema_version == 2 and accepted.rows_accepted == 2
    declared = lake.versions("m")[-1]
    assert declared.declared and declared.changes[0]["change"] == "declared"
    assert [e.data["to_version"] for e in outbox(lake, "dataset.schema.changed")] == [1, 2]


ROUND_TRIP = {
    "float32": pa.array([1.5, None], pa.float32()),
    "date32": pa.array([date(2026, 1, 31), None]),
    "timestamp-utc": pa.array(
        [datetime(2026, 1, 31, 12, tzinfo=UTC), None], pa.timestamp("us", "UTC")
    ),
    "timestamp-paris": pa.array(
        [datetime(2026, 1, 31, 12), None], pa.timestamp("ms", "Europe/Paris")
    ),
    "decimal": pa.array([Decimal("1.25"), None], pa.decimal128(10, 2)),
    "dictionary": pa.array(["x", None]).dictionary_encode(),
}


@pytest.mark.parametrize("kind", list(ROUND_TRIP))
def test_a_second_batch_of_the_same_type_is_accepted_and_read_back(lake: Lake, kind: str) -> None:
    """The catalog keeps the schema as text; each Arrow type must survive that round trip."""
    table = pa.table({"id": [1, 2], "v": ROUND_TRIP[kind]})
    first = lake.commit_batch("typed", table, source="test")
    second = lake.commit_batch("typed", table, source="test")

    assert not first.rejected_batch and not second.rejected_batch, second.reason
    assert second.schema_version == 1
    read = lake.read("typed")
    assert read.column("v").to_pylist() == table.column("v").to_pylist() * 2


def test_a_dataset_reads_back_across_a_declared_type_change(lake: Lake) -> None:
    lake.commit_batch("m", pa.table({"a": pa.array([1, 2], pa.int64())}), source="test")
    lake.declare(DatasetSpec(name="m", columns=[ColumnSpec(name="a", type="double")]))
    lake.commit_batch("m", pa.table({"a": [1.5]}), source="test")

    read = lake.read("m")  # every batch, in the current schema
    assert read.schema.field("a").type == pa.float64()
    assert sorted(read.column("a").to_pylist()) == [1.0, 1.5, 2.0]


def test_an_equal_declaration_makes_no_version(lake: Lake) -> None:
    columns = [ColumnSpec(name="a", type="int64")]
    assert lake.declare(DatasetSpec(name="d", columns=columns)) == 1
    assert lake.declare(DatasetSpec(name="d", columns=columns)) is None
    assert [v.version for v in lake.versions("d")] == [1]


# ---------------------------------------------------------------------- checks and quarantine
def test_every_check_kind_quarantines_its_bad_rows_naming_field_and_rule(lake: Lake) -> None:
    lake.declare(
        DatasetSpec(
            name="orders",
            checks=[
                NotNull(column="customer"),
                Range(column="total", min=0, max=100),
                AllowedValues(column="status", values=["new", "paid"]),
                Unique(columns=["order_id"]),
                CustomPredicate(name="even_total", function=f"{__name__}:total_is_even"),
            ],
        )
    )
    table = pa.table(
        {
            "order_id": [1, 2, 3, 4, 5, 5, 7],
            "customer": ["a", None, "c", "d", "e", "f", "g"],
            "total": [10, 20, -2, 40, 50, 60, 101],
            "status": ["new", "paid", "new", "lost", "paid", "new", "new"],
        }
    )
    result = lake.commit_batch("orders", table, source="test", batch_id="checked")

    # row 7 breaks two rules (range and even_total): both are reported
    expected = {
        2: {("customer", "not_null")},
        3: {("total", "range")},
        4: {("status", "allowed_values")},
        6: {("order_id", "unique")},
        7: {("total", "range"), ("*", "even_total")},
    }
    assert (result.rows_accepted, result.rows_rejected) == (2, 5)
    lines = quarantine_lines(lake, result.quarantine_uri or "")
    by_position = {
        line["row_number"] + 1: {(e["field"], e["rule"]) for e in line["errors"]} for line in lines
    }
    assert by_position == expected
    assert all(line["dataset"] == "orders" and line["batch_id"] == "checked" for line in lines)
    assert all(e["message"] for line in lines for e in line["errors"])
    assert lines[1]["row"] == {"order_id": 3, "customer": "c", "total": -2, "status": "new"}
    assert "-2 is below the minimum 0" in lines[1]["errors"][0]["message"]
    assert lake.read("orders").column("order_id").to_pylist() == [1, 5]

    [rejection] = lake.rejections("orders")
    assert rejection.rows == 5 and rejection.uri == result.quarantine_uri
    assert rejection.reason.startswith("5 bad row(s)")
    rejected = outbox(lake, "dataset.batch.rejected")
    assert [e.data["rows_rejected"] for e in rejected] == [5]
    assert [e.data["rows"] for e in outbox(lake, "dataset.batch.ingested")] == [2]


def test_a_predicate_must_give_one_bool_per_row(lake: Lake) -> None:
    reference = f"{__name__}:returns_too_few"
    lake.declare(DatasetSpec(name="p", checks=[CustomPredicate(name="short", function=reference)]))
    with pytest.raises(ValidationError) as info:
        lake.commit_batch("p", pa.table({"total": [1, 2]}), source="test")
    assert info.value.rule == "one-bool-per-row"
    assert lake.batches("p") == []


def test_the_reject_batch_policy_keeps_the_whole_batch(lake: Lake) -> None:
    lake.declare(
        DatasetSpec(name="strict", checks=[NotNull(column="v")], on_bad_rows="reject_batch")
    )
    lake.commit_batch("strict", pa.table({"v": [1, 2]}), source="test")  # a clean batch passes
    batch = pa.table({"v": [1, None, 3]})
    result = lake.commit_batch("strict", batch, source="test", batch_id="all-or-nothing")

    assert result.rejected_batch and (result.rows_accepted, result.rows_rejected) == (0, 3)
    assert result.reason is not None and "reject_batch" in result.reason
    assert pq.read_table(lake.storage.path_of(result.quarantine_uri or "")).equals(batch)
    lines = quarantine_lines(
        lake, (result.quarantine_uri or "").removesuffix(".parquet") + ".jsonl"
    )
    assert [(line["row_number"], line["errors"][0]["rule"]) for line in lines] == [(1, "not_null")]
    assert lake.read("strict").column("v").to_pylist() == [1, 2]
    assert [r.rows for r in lake.rejections("strict")] == [3]


def test_text_that_does_not_parse_in_a_numeric_column_is_quarantined_raw(lake: Lake) -> None:
    lake.commit_batch(
        "sales",
        pa.table({"id": [0], "amount": [1.0], "qty": pa.array([1], pa.int64())}),
        source="t",
    )
    text = pa.table(
        {
            "id": [1, 2, 3, 4, 5],
            "amount": ["1.5", "abc", " 2e3 ", "", "7"],
            "qty": ["3", "4", "x1", "5", "6.5"],
        }
    )
    result = lake.commit_batch("sales", text, source="csv", batch_id="text")

    assert (result.rows_accepted, result.rows_rejected) == (2, 3)
    assert result.schema_version == 1
    read = lake.read("sales").sort_by("id")
    assert read.schema.equals(lake.schema("sales"))
    assert read.column("id").to_pylist() == [0, 1, 4]
    assert read.column("amount").to_pylist() == [1.0, 1.5, None]  # blank is a null, not an error
    assert read.column("qty").to_pylist() == [1, 3, 5]
    lines = quarantine_lines(lake, result.quarantine_uri or "")
    assert errors_by_row(lines, "id") == {
        2: {("amount", "type")},
        3: {("qty", "type")},
        5: {("qty", "type")},
    }
    raw = {line["row"]["id"]: (line["row"]["amount"], line["row"]["qty"]) for line in lines}
    assert raw == {2: ("abc", "4"), 3: (" 2e3 ", "x1"), 5: ("7", "6.5")}
    message = next(line for line in lines if line["row"]["id"] == 2)["errors"][0]["message"]
    assert "'abc'" in message


# ---------------------------------------------------------------------- statistics and events
def test_each_batch_row_carries_its_statistics(lake: Lake) -> None:
    rng = np.random.default_rng(7)
    values = rng.normal(10, 2, 1000)
    values[:5] = np.nan
    plans = np.array(["basic", "pro", "team"])[rng.integers(0, 3, 1000)]
    table = pa.table(
        {
            "x": pa.array(values, from_pandas=False),
            "n": pa.array([None if i % 10 == 0 else i for i in range(1000)], pa.int64()),
            "plan": pa.array(plans.tolist()),
        }
    )
    result = lake.commit_batch("stats", table, source="test")
    [batch] = lake.batches("stats")
    stats = batch.stats

    assert batch.id == result.batch_id and batch.rows == 1000 and stats["rows"] == 1000
    assert batch.size_bytes == Path(lake.storage.path_of(batch.uri)).stat().st_size
    n = stats["columns"]["n"]
    assert (n["count"], n["nulls"], n["min"], n["max"]) == (900, 100, 1, 999)
    present = [i for i in range(1000) if i % 10]
    assert n["mean"] == pytest.approx(np.mean(present))
    assert len(n["percentiles"]) == 101
    assert n["percentiles"][0] == 1 and n["percentiles"][100] == 999
    assert n["percentiles"][50] == pytest.approx(np.percentile(present, 50))
    x = stats["columns"]["x"]
    finite = values[~np.isnan(values)]
    assert x["nans"] == 5 and x["nulls"] == 0
    assert (x["min"], x["max"]) == (finite.min(), finite.max())  # NaN must not leak
    assert x["percentiles"][50] == pytest.approx(np.percentile(finite, 50))
    plan = stats["columns"]["plan"]
    names, counts = np.unique(plans, return_counts=True)
    assert plan["categories"] == dict(zip(names.tolist(), counts.tolist(), strict=True))
    assert plan["distinct"] == 3 and plan["other"] == 0
    assert json.loads(json.dumps(stats, allow_nan=False)) == stats  # plain JSON, no NaN


def test_a_duplicate_batch_id_is_a_no_op(lake: Lake, root: Path) -> None:
    first = lake.commit_batch("churn", pa.table({"id": [1]}), source="test", batch_id="same")
    files, events = all_files(root), outbox(lake)
    again = lake.commit_batch("churn", pa.table({"id": [2, 3]}), source="test", batch_id="same")

    assert again.duplicate and not again.rejected_batch
    assert (again.rows_accepted, again.uri, again.events) == (0, None, [])
    assert first.rows_accepted == 1 and not first.duplicate
    assert all_files(root) == files and outbox(lake) == events
    assert lake.read("churn").column("id").to_pylist() == [1]


def test_the_ingested_event_describes_the_batch(lake: Lake) -> None:
    table = pa.table({"id": [1, 2, 3], "plan": ["a", "b", "a"], "x": [1.0, None, 3.0]})
    result = lake.commit_batch(
        "churn", table, source="upload:a.csv", batch_id="ev", lineage=["s3://raw/a.csv"]
    )
    [event] = outbox(lake, "dataset.batch.ingested")
    [batch] = lake.batches("churn")

    assert event.id == result.events[-1].id and event.subject == "churn"
    data = event.data
    assert (data["dataset"], data["batch_id"], data["rows"]) == ("churn", "ev", 3)
    assert (data["schema_version"], data["uri"]) == (1, result.uri)
    assert (data["source"], data["lineage"]) == ("upload:a.csv", ["s3://raw/a.csv"])
    assert set(data["stats"]) == {"id", "plan", "x"}
    for column, summary in data["stats"].items():
        full = batch.stats["columns"][column]
        assert summary == {
            k: full[k] for k in ("count", "nulls", "min", "max", "mean", "distinct") if k in full
        }
    assert data["stats"]["x"] == {"count": 2, "nulls": 1, "min": 1.0, "max": 3.0, "mean": 2.0}
    assert data["stats"]["plan"]["distinct"] == 2


def test_events_follow_their_cause(lake: Lake) -> None:
    cause = Event(type="shop.upload.finished", data={})
    result = lake.commit_batch("churn", pa.table({"id": [1]}), source="test", cause=cause)
    assert {e.causationid for e in result.events} == {cause.id}
    assert {e.correlationid for e in result.events} == {cause.id}


def test_an_invalid_dataset_name_names_the_field(lake: Lake) -> None:
    with pytest.raises(ValidationError) as info:
        lake.commit_batch("Bad Name!", pa.table({"id": [1]}), source="test")
    assert info.value.field in ("name", "dataset")
    assert "Bad Name!" in str(info.value)
    assert lake.names() == []


def test_the_manifest_rows_match_the_files(lake: Lake, store: Store) -> None:
    for i in range(3):
        lake.commit_batch("churn", pa.table({"id": [i, i + 10]}), source="test")
    with store.session() as session:
        uris = list(session.scalars(select(BatchRow.uri).order_by(BatchRow.created_at)))
        versions = list(session.scalars(select(SchemaVersionRow.version)))
        rejections = list(session.scalars(select(RejectionRow)))
    assert [lake.storage.path_of(u) for u in uris] == lake.files("churn")
    assert versions == [1] and rejections == []
    assert lake.summary("churn")["rows"] == 6
