"""`eventops drift` in process: files and lake datasets, table, JSON and HTML, exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from typer.testing import CliRunner

from eventops.cli import app
from eventops.config import load_settings
from eventops.lake import Lake

runner = CliRunner()


def table(
    rows: int, seed: int, shift: float = 0.0, plans: tuple[str, ...] = ("a", "b")
) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "age": rng.normal(40 + 10 * shift, 10, rows),
            "income": rng.exponential(1_000, rows),
            "plan": rng.choice(list(plans), rows),
            "score": rng.uniform(0, 1, rows),
        }
    )


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith("EVENTOPS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")  # Rich tables: no folding inside cells
    pq.write_table(table(3_000, 1), tmp_path / "ref.parquet")
    pq.write_table(table(3_000, 2, shift=0.5), tmp_path / "shifted.parquet")
    pq.write_table(table(3_000, 3), tmp_path / "same.parquet")
    pa_csv.write_csv(table(3_000, 2, shift=0.5), tmp_path / "shifted.csv")
    return tmp_path


def invoke(*args: str) -> Result:
    return runner.invoke(app, ["drift", *args])


def test_table_and_verdict(home: Path) -> None:
    result = invoke("--reference", "ref.parquet", "--current", "shifted.csv")
    assert result.exit_code == 0, result.output
    for name in ("age", "income", "plan", "score", "p-value", "effect", "W/sd"):
        assert name in result.stdout
    assert "Drift: 1 of 4 columns (25%): age." in result.stdout
    assert "Bonferroni over 4 tests at alpha 0.05" in result.stdout


def test_no_drift_and_fail_on_drift(home: Path) -> None:
    same = invoke("-r", "ref.parquet", "-c", "same.parquet", "--fail-on-drift")
    assert same.exit_code == 0 and "No drift in 4 columns." in same.stdout
    drifted = invoke("-r", "ref.parquet", "-c", "shifted.parquet", "--fail-on-drift")
    assert drifted.exit_code == 1


def test_json_shape(home: Path) -> None:
    result = invoke("-r", "ref.parquet", "-c", "shifted.parquet", "--json", "--prediction", "score")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset_drifted"] is True and report["drifted_columns"] == ["age"]
    assert report["tests"] == 3 and report["alpha"] == 0.05 and report["correction"] == "bonferroni"
    assert [c["name"] for c in report["columns"]] == ["age", "income", "plan"]
    assert report["prediction"]["name"] == "score" and report["prediction"]["drifted"] is False
    age = report["columns"][0]
    assert set(age) >= {
        "name", "kind", "method", "statistic", "p_value", "alpha", "effect", "effect_name",
        "threshold", "psi", "drifted", "reason", "reference_count", "current_count",
        "reference_nulls", "current_nulls",
    }  # fmt: skip
    assert (age["method"], age["reference_count"], age["current_nulls"]) == ("ks", 3000, 0)
    assert report["quality"] == [] and report["reference_rows"] == 3000


def test_html_file_written(home: Path) -> None:
    result = invoke("-r", "ref.parquet", "-c", "shifted.parquet", "--html", "out/report.html")
    assert result.exit_code == 2 and "--html" in result.output  # the folder does not exist
    result = invoke("-r", "ref.parquet", "-c", "shifted.parquet", "--html", "report.html")
    assert result.exit_code == 0, result.output
    page = (home / "report.html").read_text()
    assert "<table>" in page and "age" in page and "<svg" in page


def test_columns_option_and_quality_findings(home: Path) -> None:
    pq.write_table(table(3_000, 4, plans=("a", "b", "c")), home / "plans.parquet")
    result = invoke("-r", "ref.parquet", "-c", "plans.parquet", "--columns", "plan,score")
    assert result.exit_code == 0, result.output
    assert "age" not in result.stdout.split("data quality")[0]
    assert "unseen_category" in result.stdout and "'c'" in result.stdout


def test_lake_dataset_and_folder_of_parquet(home: Path) -> None:
    lake = Lake.from_settings(load_settings())
    try:
        ref = table(2_000, 5)
        lake.commit_batch("customers", ref.slice(0, 1_000), source="test")
        lake.commit_batch("customers", ref.slice(1_000), source="test")
    finally:
        lake.store.close()
    folder = home / "window"
    folder.mkdir()
    shifted = table(2_000, 6, shift=0.5)
    pq.write_table(shifted.slice(0, 1_000), folder / "part-0.parquet")
    pq.write_table(shifted.slice(1_000), folder / "part-1.parquet")
    result = invoke("-r", "customers", "-c", "window", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["reference_rows"] == report["current_rows"] == 2_000
    assert report["drifted_columns"] == ["age"]


@pytest.mark.parametrize(
    ("args", "code", "named"),
    [
        (["-r", "missing.parquet", "-c", "same.parquet"], 3, "--reference"),
        (["-r", "ref.parquet", "-c", "no_such_dataset"], 3, "--current"),
        (["-r", "notes.txt", "-c", "same.parquet"], 2, "--reference"),
        (["-r", "ref.parquet", "-c", "empty_folder"], 2, "--current"),
        (["-r", "ref.parquet", "-c", "broken.csv"], 2, "--current"),
        (["-r", "ref.parquet", "-c", "same.parquet", "--columns", "age,nope"], 2, "--columns"),
        (["-r", "ref.parquet", "-c", "same.parquet", "--alpha", "1.5"], 2, "--alpha"),
        (["-r", "ref.parquet", "-c", "same.parquet", "--categorical", "nope"], 2, "--categorical"),
        (["-r", "ref.parquet", "-c", "same.parquet", "--correction", "holm"], 2, "--correction"),
    ],
)
def test_bad_input_names_the_option(home: Path, args: list[str], code: int, named: str) -> None:
    (home / "notes.txt").write_text("not data\n")
    (home / "empty_folder").mkdir()
    (home / "broken.csv").write_text("a,b\n1,2\n3,4,5\n")
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert f"error: {named}:" in result.output
