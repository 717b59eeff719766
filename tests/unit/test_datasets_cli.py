"""`eventops datasets ...` and `eventops sql`, in process, on a lake, store and bus in tmp_path."""

from __future__ import annotations

import csv
import io
import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import typer
from typer.testing import CliRunner

from eventops.cli import datasets_cmd, sql_cmd
from eventops.config import load_settings
from eventops.events.bus import open_bus
from eventops.lake import DatasetSpec, Lake, Range

runner = CliRunner()
app = typer.Typer()
app.add_typer(datasets_cmd.app, name="datasets")
app.command(name="sql")(sql_cmd.sql)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("EVENTOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EVENTOPS_STORE_URL", f"sqlite:///{tmp_path}/store.db")
    monkeypatch.setenv("EVENTOPS_LAKE_URL", str(tmp_path / "lake"))
    monkeypatch.setenv("EVENTOPS_BUS_URL", f"sqlite:///{tmp_path}/events.db")
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables: no folding inside cells
    return tmp_path


@pytest.fixture
def lake(home: Path) -> Iterator[Lake]:
    lake = Lake.from_settings(load_settings())
    yield lake
    lake.store.close()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def seed(lake: Lake) -> list[str]:
    """churn: v1, then v2 adding plan; one row out of range goes to quarantine."""
    lake.declare(
        DatasetSpec(name="churn", description="customers", checks=[Range(column="age", min=0)])
    )
    first = lake.commit_batch("churn", pa.table({"id": [1, 2], "age": [30, -1]}), source="test")
    second = lake.commit_batch(
        "churn", pa.table({"id": [3, 4], "age": [50, 70], "plan": ["pro", "pro"]}), source="test"
    )
    return [first.batch_id, second.batch_id]


def test_list_shows_each_dataset_with_its_counts(lake: Lake) -> None:
    seed(lake)
    result = invoke("datasets", "list")
    assert result.exit_code == 0, result.output
    (line,) = [row for row in result.output.splitlines() if "churn" in row]
    assert [cell for cell in line.replace("│", " ").split()][:5] == ["churn", "v2", "2", "3", "1"]
    as_json = json.loads(invoke("datasets", "list", "--json").output)
    assert as_json[0]["name"] == "churn" and as_json[0]["rows_rejected"] == 1


def test_show_gives_versions_batches_statistics_and_rejections(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")  # wide enough for pytest's long tmp paths unfolded
    first, second = seed(lake)
    result = invoke("datasets", "show", "churn")
    assert result.exit_code == 0, result.output
    out = result.output
    assert "added plan (string)" in out
    assert first in out and second in out
    assert "pro: 2" in out  # top categories of the latest batch
    (quarantine,) = [r.uri for r in lake.rejections("churn")]
    assert quarantine in out
    info = json.loads(invoke("datasets", "show", "churn", "--json").output)
    assert [v["version"] for v in info["schema_versions"]] == [1, 2]
    assert info["latest_batch"] == second
    assert info["latest_stats"]["age"]["mean"] == 60.0
    assert info["rejections"][0]["quarantine_uri"] == quarantine
    missing = invoke("datasets", "show", "nope")
    assert missing.exit_code == 3 and "dataset" in missing.output


def test_declare_makes_a_schema_version_and_publishes_its_event(home: Path) -> None:
    spec = home / "churn.toml"
    spec.write_text(
        textwrap.dedent(
            """
            name = "churn"
            description = "customers"
            on_bad_rows = "reject_batch"
            [[columns]]
            name = "age"
            type = "int64"
            nullable = false
            [[checks]]
            kind = "range"
            column = "age"
            min = 0
            """
        )
    )
    result = invoke("datasets", "declare", str(spec))
    assert result.exit_code == 0, result.output
    assert "new schema version v1" in result.output
    again = invoke("datasets", "declare", str(spec))
    assert again.exit_code == 0 and "schema unchanged" in again.output
    bus = open_bus(f"sqlite:///{home}/events.db")
    consumer = bus.consumer(None, start="earliest")
    events = [r.event for r in consumer.poll(0.5, 100) if r.event is not None]
    consumer.close()
    bus.close()
    assert [e.type for e in events] == ["dataset.schema.changed"]
    assert events[0].data["to_version"] == 1
    bare = home / "bare.json"
    bare.write_text('{"name": "bare", "checks": [{"kind": "not_null", "column": "id"}]}')
    result = invoke("datasets", "declare", str(bare))
    assert result.exit_code == 0 and "the first batch sets the schema" in result.output


@pytest.mark.parametrize(
    ("document", "suffix", "field"),
    [
        ({"description": "no name"}, ".json", "name"),
        ({"name": "Bad Name"}, ".json", "name"),
        (
            {"name": "t", "columns": [{"name": "a", "type": "int64"}, {"name": "b"}]},
            ".json",
            "columns[1].type",
        ),
        ({"name": "t", "columns": [{"name": "a", "type": "int128"}]}, ".json", "columns.a.type"),
        ({"name": "t", "on_bad_rows": "drop"}, ".json", "on_bad_rows"),
        ({"name": "t", "checks": [{"kind": "sometimes", "column": "a"}]}, ".json", "checks[0]"),
        (
            {
                "name": "t",
                "columns": [{"name": "a", "type": "int64"}],
                "checks": [{"kind": "not_null", "column": "b"}],
            },
            ".json",
            "checks[0].column",
        ),
        ("name = [", ".toml", "SPEC_FILE"),
    ],
)
def test_declare_with_a_bad_spec_names_the_field(
    home: Path, document: object, suffix: str, field: str
) -> None:
    spec = home / f"spec{suffix}"
    spec.write_text(document if isinstance(document, str) else json.dumps(document))
    result = invoke("datasets", "declare", str(spec))
    assert result.exit_code == 2, result.output
    assert f"error: {field}:" in result.output
    lake = Lake.from_settings(load_settings())
    assert lake.names() == []  # nothing was declared
    lake.store.close()


def test_vacuum_removes_only_old_orphans_and_dry_run_removes_nothing(lake: Lake) -> None:
    seed(lake)
    orphan = lake.storage.path("datasets", "churn", "v1", "date=2026-01-01", "crashed.parquet")
    lake.storage.write_parquet(orphan, pa.table({"id": [9]}))
    fresh = invoke("datasets", "vacuum", "--dry-run")
    assert fresh.exit_code == 0 and "0 orphan file(s) found" in fresh.output
    old = time.time() - 7200
    os.utime(orphan, (old, old))
    dry = invoke("datasets", "vacuum", "--dry-run")
    assert orphan in dry.output and "1 orphan file(s) found" in dry.output
    assert Path(orphan).exists()
    done = invoke("datasets", "vacuum", "--min-age", "1h")
    assert done.exit_code == 0 and "1 orphan file(s) deleted" in done.output
    assert not Path(orphan).exists()
    assert lake.read("churn").num_rows == 3  # committed batches untouched
    bad = invoke("datasets", "vacuum", "--min-age", "soon")
    assert bad.exit_code == 2 and "--min-age" in bad.output


def test_transform_run_and_lineage_from_the_command_line(lake: Lake, home: Path) -> None:
    first, _ = seed(lake)
    (home / "transforms.toml").write_text(
        textwrap.dedent(
            """
            [[transforms]]
            name = "adults"
            source = "churn"
            target = "adults"
            sql = "SELECT id, age FROM batch WHERE age >= 18"
            """
        )
    )
    result = invoke("datasets", "transform", "run", "adults", "--batch", first)
    assert result.exit_code == 0, result.output
    (out,) = lake.batches("adults")
    assert f"adults batch {out.id}: 1 rows" in result.output
    again = invoke("datasets", "transform", "run", "adults", "--batch", first)
    assert "already done" in again.output
    shown = invoke("datasets", "lineage", "adults", out.id)
    assert shown.exit_code == 0 and first in shown.output
    unknown = invoke("datasets", "transform", "run", "nope", "--batch", first)
    assert unknown.exit_code == 2 and "NAME" in unknown.output


def test_sql_prints_a_table_json_lines_or_csv(lake: Lake) -> None:
    seed(lake)
    query = "SELECT id, age, plan FROM churn ORDER BY id"
    table = invoke("sql", query)
    assert table.exit_code == 0, table.output
    assert "pro" in table.output and "3 row(s)" in table.output
    lines = invoke("sql", query, "--json").output.splitlines()
    assert [json.loads(line) for line in lines] == [
        {"id": 1, "age": 30, "plan": None},
        {"id": 3, "age": 50, "plan": "pro"},
        {"id": 4, "age": 70, "plan": "pro"},
    ]
    rows = list(csv.reader(io.StringIO(invoke("sql", query, "--csv", "--max-rows", "2").output)))
    assert rows == [["id", "age", "plan"], ["1", "30", ""], ["3", "50", "pro"]]
    limited = invoke("sql", query, "--max-rows", "1")
    assert "2 more not shown" in limited.output
    from_stdin = invoke("sql", "-", "--json", input="SELECT count(*) AS n FROM eventops_batches")
    assert json.loads(from_stdin.output) == {"n": 2}


def test_sql_refuses_writes_and_names_bad_sql(lake: Lake) -> None:
    seed(lake)
    write = invoke("sql", "DELETE FROM churn")
    assert write.exit_code == 2 and "read-only" in write.output and "sql:" in write.output
    bad = invoke("sql", "SELECT nothing FROM churn")
    assert bad.exit_code == 2 and "nothing" in bad.output
    both = invoke("sql", "SELECT 1", "--json", "--csv")
    assert both.exit_code == 2 and "--json" in both.output
