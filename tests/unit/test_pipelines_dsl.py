"""The pipeline DSL (tracing, graph, validation) and the artifact materializers."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from eventops.errors import NotFound, ValidationError
from eventops.lake.storage import LakeStorage
from eventops.pipelines.artifacts import ArtifactStore
from eventops.pipelines.dsl import PIPELINES, Pipeline, get_pipeline, pipeline, step

calls: list[str] = []


@step
def extract(rows: int) -> pa.Table:
    calls.append("extract")
    return pa.table({"x": list(range(rows))})


@step(retries=2, timeout=5)
def left(table: pa.Table) -> dict[str, int]:
    return {"n": table.num_rows}


@step(cache=False)
def right(table: pa.Table, factor: int = 3) -> int:
    return table.num_rows * factor


@step
def join(summary: dict[str, int], total: int) -> dict[str, int]:
    return {**summary, "total": total}


@pipeline(name="dsl-demo", triggers=["opaque-rule"], params={"rows": 10})
def demo(rows: int, factor: int = 2) -> None:
    table = extract(rows)
    join(left(table), right(table, factor))


def test_tracing_builds_the_graph_without_running_steps() -> None:
    assert calls == []
    assert isinstance(demo, Pipeline)
    assert PIPELINES["dsl-demo"] is demo
    assert get_pipeline("dsl-demo") is demo
    assert [(n.name, n.upstreams) for n in demo.graph] == [
        ("extract", []),
        ("left", ["extract"]),
        ("right", ["extract"]),
        ("join", ["left", "right"]),
    ]
    assert demo.nodes["right"].params == {"factor": "factor"}
    assert demo.triggers == ("opaque-rule",)
    assert left.options.retries == 2 and left.options.timeout == 5
    assert right.options.cache is False


def test_a_step_called_outside_a_pipeline_runs() -> None:
    assert extract(2).num_rows == 2
    assert calls == ["extract"]
    calls.clear()


def test_params_resolve_with_defaults_and_refuse_unknown_or_missing() -> None:
    assert demo.resolve_params({}) == {"rows": 10, "factor": 2}
    assert demo.resolve_params({"factor": 5}) == {"rows": 10, "factor": 5}
    with pytest.raises(ValidationError, match="no parameter 'epochs'") as info:
        demo.resolve_params({"epochs": 3})
    assert info.value.rule == "unknown-param"

    @pipeline(name="dsl-required")
    def required(rows: int) -> None:
        extract(rows)

    with pytest.raises(ValidationError, match="needs a value for parameter 'rows'"):
        required.resolve_params({})


def test_unknown_pipeline_is_not_found() -> None:
    with pytest.raises(NotFound, match="no pipeline named 'nope'"):
        get_pipeline("nope")


def test_type_mismatch_names_pipeline_step_and_parameter() -> None:
    @step
    def summarize(rows: int) -> dict[str, int]:
        return {"rows": rows}

    with pytest.raises(ValidationError) as info:

        @pipeline(name="dsl-mismatch")
        def mismatch(rows: int = 1) -> None:
            left(summarize(rows))

    message = str(info.value)
    assert "'dsl-mismatch'" in message
    assert "step 'left'" in message
    assert "parameter 'table'" in message
    assert info.value.rule == "type"


def test_loose_annotations_are_not_mismatches() -> None:
    @step
    def anything(rows: int):  # type: ignore[no-untyped-def]
        return rows

    @step
    def maybe(value: int | None) -> int:
        return value or 0

    @step
    def counts(rows: int) -> int:
        return rows

    @pipeline(name="dsl-loose")
    def loose(rows: int = 1) -> None:
        left(anything(rows))
        maybe(counts(rows))

    assert [n.name for n in loose.graph] == ["anything", "left", "counts", "maybe"]


def test_bad_definitions_are_named() -> None:
    with pytest.raises(ValidationError, match=r"'dsl-bad-kw', step 'extract'.*epochs"):

        @pipeline(name="dsl-bad-kw")
        def bad_kw(rows: int = 1) -> None:
            extract(rows, epochs=3)  # type: ignore[call-arg]

    with pytest.raises(ValidationError, match="does not take") as info:

        @pipeline(name="dsl-bad-params", params={"epochs": 3})
        def bad_params(rows: int = 1) -> None:
            extract(rows)

    assert info.value.rule == "unknown-param"
    with pytest.raises(ValidationError, match="calls no step"):

        @pipeline(name="dsl-empty")
        def empty() -> None:
            pass


def test_a_step_called_twice_gets_numbered_names() -> None:
    @pipeline(name="dsl-twice")
    def twice() -> None:
        extract(1)
        extract(2)

    assert [n.name for n in twice.graph] == ["extract", "extract_2"]
    assert twice.nodes["extract_2"].inputs["rows"].value == 2


# ---------------------------------------------------------------------- artifacts
@pytest.fixture
def artifacts(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(LakeStorage(str(tmp_path / "lake")))


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (pa.table({"a": [1, 2]}), "arrow"),
        ({"a": [1, 2], "b": "c"}, "json"),
        (None, "json"),
        ((1, 2), "joblib"),
        ({1, 2}, "joblib"),
    ],
)
def test_artifacts_round_trip(artifacts: ArtifactStore, value: object, kind: str) -> None:
    ref = artifacts.save(value, pipeline="p", run_id="r1", step="s")
    assert ref["kind"] == kind
    assert len(ref["sha256"]) == 64
    loaded = artifacts.load(ref)
    assert loaded.equals(value) if isinstance(value, pa.Table) else loaded == value


def test_pandas_and_files(artifacts: ArtifactStore, tmp_path: Path) -> None:
    import pandas as pd  # a dev dependency: the test must run, not skip

    frame = pd.DataFrame({"a": [1, 2]})
    ref = artifacts.save(frame, pipeline="p", run_id="r1", step="s", name="frame")
    assert ref["kind"] == "pandas"
    assert artifacts.load(ref).equals(frame)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    ref = artifacts.save(model, pipeline="p", run_id="r1", step="s", name="model")
    assert ref["kind"] == "file"
    assert ref["uri"].endswith("/artifacts/p/r1/s/model.bin")
    assert artifacts.load(ref).read_bytes() == b"weights"


def test_artifacts_refuse_uris_outside_the_root(artifacts: ArtifactStore, tmp_path: Path) -> None:
    outside = tmp_path / "evil.joblib"
    outside.write_bytes(b"x")
    for uri in (
        f"file://{outside}",
        f"file://{artifacts.base}/../evil.joblib",
        "s3://bucket/artifacts/x.joblib",
    ):
        with pytest.raises(ValidationError) as info:
            artifacts.load({"uri": uri, "kind": "joblib", "sha256": ""})
        assert info.value.rule == "inside-root"


def test_artifacts_detect_tampering(artifacts: ArtifactStore) -> None:
    ref = artifacts.save({"a": 1}, pipeline="p", run_id="r1", step="s")
    Path(artifacts.storage.path_of(ref["uri"])).write_text('{"a": 2}')
    with pytest.raises(ValidationError, match="sha256"):
        artifacts.load(ref)
