"""File ingestion: formats, stdin, unparseable input kept in quarantine, and the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from eventops.cli import app
from eventops.errors import ValidationError
from eventops.ingest.files import detect_format, ingest_file
from eventops.lake import DatasetSpec, Lake, LakeStorage, Range
from eventops.store import OutboxEntry, Store


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    return Lake(store, LakeStorage(str(tmp_path / "lake")))


def test_csv_ndjson_and_parquet_land_in_one_dataset(lake: Lake, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,score\n1,0.5\n2,0.7\n")
    (tmp_path / "b.jsonl").write_text('{"id": 3, "score": 0.1}\n{"id": 4, "score": 0.2}\n')
    pq.write_table(pa.table({"id": [5], "score": [0.9]}), tmp_path / "c.parquet")
    for name in ("a.csv", "b.jsonl", "c.parquet"):
        report = ingest_file(lake, "scores", str(tmp_path / name))
        assert report.rows_rejected == 0
    table = lake.read("scores")
    assert sorted(table.column("id").to_pylist()) == [1, 2, 3, 4, 5]
    assert len(lake.batches("scores")) == 3


def test_a_json_array_file_is_accepted(lake: Lake, tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps([{"id": 1}, {"id": 2}]))
    assert ingest_file(lake, "arr", str(tmp_path / "a.json")).rows_accepted == 2


def test_large_files_are_split_into_batches(lake: Lake, tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id\n" + "\n".join(str(i) for i in range(25)) + "\n")
    report = ingest_file(lake, "split", str(tmp_path / "a.csv"), batch_rows=10)
    assert [r.rows_accepted for r in report.results] == [10, 10, 5]


def test_unparseable_lines_are_quarantined_and_the_rest_ingested(
    lake: Lake, tmp_path: Path
) -> None:
    (tmp_path / "a.csv").write_text("id,plan\n1,a\n2\n3,c,extra\n4,d\n")
    (tmp_path / "b.jsonl").write_text('{"id": 5, "plan": "e"}\nnot json\n[1, 2]\n')
    csv_report = ingest_file(lake, "plans", str(tmp_path / "a.csv"))
    json_report = ingest_file(lake, "plans", str(tmp_path / "b.jsonl"))
    assert (csv_report.rows_accepted, csv_report.rows_rejected) == (2, 2)
    assert (json_report.rows_accepted, json_report.rows_rejected) == (1, 2)
    kept = []
    for rejection in lake.rejections("plans"):
        text = lake.storage.read_bytes(lake.storage.path_of(rejection.uri)).decode()
        kept += [json.loads(line) for line in text.splitlines()]
    texts = {k["text"]: k["errors"][0]["rule"] for k in kept}
    assert texts == {
        "2": "column-count",
        "3,c,extra": "column-count",
        "not json": "json",
        "[1, 2]": "object",
    }
    types = {e.type for e in _outbox(lake)}
    assert {"dataset.batch.rejected", "dataset.batch.ingested"} <= types


def test_stdin_is_read_and_its_format_detected(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b'{"id": 1}\n{"id": 2}\n'))
    monkeypatch.setattr("sys.stdin", stdin)
    assert ingest_file(lake, "piped", "-").rows_accepted == 2


def test_format_detection() -> None:
    assert detect_format("x.parquet", b"") == "parquet"
    assert detect_format("-", b"PAR1....") == "parquet"
    assert detect_format("-", b'  {"a": 1}') == "ndjson"
    assert detect_format("-", b"a,b\n") == "csv"
    with pytest.raises(ValidationError) as info:
        detect_format("data.xlsx", b"")
    assert info.value.field == "--format"
    with pytest.raises(ValidationError):
        detect_format("x", b"", "excel")


def test_missing_and_corrupt_files_name_the_problem(lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as info:
        ingest_file(lake, "x", str(tmp_path / "absent.csv"))
    assert info.value.rule == "exists"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ValidationError) as info:
        ingest_file(lake, "x", str(tmp_path / "bad.parquet"))
    assert info.value.rule == "parquet"


def test_the_cli_ingests_and_summarises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    (tmp_path / "a.csv").write_text("id,age\n1,30\n2,-4\n3,50\n")
    store = Store(f"sqlite:///{tmp_path}/.eventops/eventops.db")
    store.upgrade()
    lake = Lake(store, LakeStorage(str(tmp_path / ".eventops" / "lake")))
    lake.declare(DatasetSpec(name="people", checks=[Range(column="age", min=0)]))
    result = CliRunner().invoke(app, ["ingest", "people", "a.csv"])
    assert result.exit_code == 0, result.output
    assert "2 rows accepted, 1 rejected" in result.output
    assert "quarantine" in result.output
    tail = CliRunner().invoke(
        app, ["events", "tail", "--from-beginning", "--json", "--timeout", "1"]
    )
    types = [json.loads(line)["type"] for line in tail.stdout.splitlines()]
    assert types.count("dataset.batch.ingested") == 1 and types.count("dataset.batch.rejected") == 1
    missing = CliRunner().invoke(app, ["ingest", "people", "nope.csv"])
    assert missing.exit_code == 2 and "nope.csv" in missing.output


def _outbox(lake: Lake) -> list[OutboxEntry]:
    with lake.store.session() as session:
        return list(session.query(OutboxEntry).all())
