"""Request bodies in every supported format, and every bad-input rule with its status, field and
rule: checked before a request can join a batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from eventops.serving.app import create_app
from eventops.serving.inputs import Inputs
from eventops.serving.models import assemble
from eventops.serving.open_inference import parse_infer as parse_v2
from eventops.serving.protocols import parse_invocation
from eventops.serving.schema import Column, InputError, InputSchema
from serving_models import MIXED, NUMERIC, fake_model, tensor_model, test_client

JSON = "application/json"
ROW = {"a": 1.5, "b": 2.0, "n": 3, "plan": "basic", "flag": True}


def invocation(payload: Any, schema: InputSchema = MIXED, content_type: str = JSON) -> Inputs:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return parse_invocation(body, content_type, schema).inputs


def frame_of(inputs: Inputs, schema: InputSchema = MIXED) -> Any:
    return assemble(schema, [inputs])


# ---------------------------------------------------------------------- accepted formats
@pytest.mark.parametrize(
    "payload",
    [
        {"dataframe_split": {"columns": list(ROW), "data": [list(ROW.values())] * 2}},
        {"dataframe_split": {"columns": ["plan", "n", "b", "a"], "data": [["basic", 3, 2.0, 1.5]] * 2}},
        {"dataframe_records": [ROW, ROW]},
        {"instances": [ROW, ROW]},
        {"inputs": {k: [v, v] for k, v in ROW.items()}},
        {"inputs": [[1.5, 2.0, 3, "basic", True]] * 2},
        {"instances": [[1.5, 2.0, 3, "basic", True]] * 2},
    ],
    ids=["split", "split-reordered", "records", "instances-records", "inputs-columns",
         "inputs-rows", "instances-rows"],
)  # fmt: skip
def test_every_mlflow_json_format_gives_the_same_frame(payload: dict[str, Any]) -> None:
    frame = frame_of(invocation(payload))
    assert list(frame.columns) == ["a", "b", "n", "plan", "flag"]
    assert len(frame) == 2
    assert frame["a"].tolist() == [1.5, 1.5]
    assert frame["n"].dtype == np.int64 and frame["n"].tolist() == [3, 3]
    assert frame["plan"].tolist() == ["basic", "basic"]


def test_extra_columns_are_dropped_and_missing_optional_ones_are_null() -> None:
    record = {k: v for k, v in ROW.items() if k != "flag"} | {"extra": "ignored"}
    frame = frame_of(invocation({"dataframe_records": [record]}))
    assert list(frame.columns) == ["a", "b", "n", "plan", "flag"]
    assert frame["flag"].tolist() == [None]


def test_null_in_a_double_column_is_a_missing_value() -> None:
    frame = frame_of(invocation({"dataframe_records": [ROW | {"a": None}]}))
    assert np.isnan(frame["a"][0])


def test_numeric_rows_take_the_matrix_fast_path() -> None:
    inputs = invocation(
        {"dataframe_split": {"columns": ["b", "a"], "data": [[2, 1.0], [4, 3.0]]}}, NUMERIC
    )
    assert inputs.form == "matrix"
    assert inputs.data.tolist() == [[1.0, 2.0], [3.0, 4.0]]  # reordered to the signature


def test_csv_with_a_header() -> None:
    body = b"plan,a,b,n,flag\nbasic,1.5,2,3,true\npremium,,1,4,0\n"
    frame = frame_of(invocation(body, content_type="text/csv; charset=utf-8"))
    assert frame["plan"].tolist() == ["basic", "premium"]
    assert frame["n"].tolist() == [3, 4]
    assert frame["flag"].tolist() == [True, False]
    assert np.isnan(frame["a"][1])


def test_v2_one_tensor_per_column_and_one_2d_tensor() -> None:
    per_column = {
        "id": "r1",
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "FP64", "data": [1.0, 3.0]},
            {"name": "b", "shape": [2, 1], "datatype": "FP32", "data": [[2.0], [4.0]]},
        ],
    }
    parsed, request_id = parse_v2(per_column, NUMERIC)
    assert request_id == "r1"
    assert frame_of(parsed.inputs, NUMERIC).to_numpy().tolist() == [[1.0, 2.0], [3.0, 4.0]]
    matrix = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]}
    parsed, _ = parse_v2(matrix, NUMERIC)
    assert parsed.inputs.form == "matrix"
    assert parsed.inputs.data.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    nested = {
        "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1, 2], [3, 4]]}]
    }
    assert parse_v2(nested, NUMERIC)[0].inputs.data.tolist() == [[1.0, 2.0], [3.0, 4.0]]


def test_tensor_signature_models() -> None:
    model = tensor_model(width=3)
    inputs = invocation({"inputs": [[1, 2, 3], [4, 5, 6]]}, model.schema)
    assert inputs.form == "tensor" and inputs.data.dtype == np.float32 and inputs.rows == 2
    v2 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    assert parse_v2(v2, model.schema)[0].inputs.data.shape == (1, 3)
    with pytest.raises(InputError) as error:
        invocation({"inputs": [[1, 2]]}, model.schema)
    assert (error.value.http_status, error.value.rule) == (422, "shape")


def test_a_model_without_signature_takes_what_it_gets() -> None:
    inputs = invocation({"dataframe_records": [{"x": 1, "y": "a"}]}, InputSchema())
    assert set(inputs.data) == {"x", "y"} and inputs.layout


# ---------------------------------------------------------------------- refused input
BAD: list[tuple[str, Any, str, int, str | None, str]] = [
    ("not-json", b"{", JSON, 400, "body", "json"),
    ("empty-body", b"", JSON, 400, "body", "non-empty"),
    ("not-an-object", [1, 2], JSON, 400, "body", "object"),
    ("unknown-format", {"rows": [ROW]}, JSON, 400, "body", "format"),
    ("two-formats", {"inputs": [ROW], "instances": [ROW]}, JSON, 400, "body", "format"),
    ("params-not-object", {"inputs": [ROW], "params": 3}, JSON, 400, "params", "object"),
    ("media-type", b"a=1", "text/plain", 415, "content-type", "media-type"),
    ("missing-column", {"dataframe_records": [{"a": 1.0, "b": 2.0, "n": 1}]}, JSON, 422, "plan", "required"),
    ("missing-in-split", {"dataframe_split": {"columns": ["a", "b", "plan"], "data": [[1.0, 2.0, "x"]]}}, JSON, 422, "n", "required"),
    ("string-in-double", {"dataframe_records": [ROW | {"a": "1.5"}]}, JSON, 422, "a", "type"),
    ("bool-in-double", {"dataframe_records": [ROW | {"b": True}]}, JSON, 422, "b", "type"),
    ("float-in-long", {"dataframe_records": [ROW | {"n": 1.5}]}, JSON, 422, "n", "type"),
    ("null-in-long", {"dataframe_records": [ROW | {"n": None}]}, JSON, 422, "n", "not-null"),
    ("number-in-string", {"dataframe_records": [ROW | {"plan": 7}]}, JSON, 422, "plan", "type"),
    ("int-in-boolean", {"dataframe_records": [ROW | {"flag": 1}]}, JSON, 422, "flag", "type"),
    ("long-overflow", b'{"dataframe_records": [{"a": 1.0, "b": 1.0, "n": 18446744073709551615, "plan": "x"}]}', JSON, 422, "n", "range"),
    ("record-not-object", {"dataframe_records": [ROW, [1, 2]]}, JSON, 422, "dataframe_records[1]", "object"),
    ("ragged-rows", {"dataframe_split": {"columns": ["a", "b"], "data": [[1.0, 2.0], [1.0]]}}, JSON, 422, "dataframe_split.data[1]", "shape"),
    ("row-width", {"inputs": [[1.5, 2.0, 3]]}, JSON, 422, "inputs[0]", "shape"),
    ("no-rows", {"dataframe_records": []}, JSON, 422, "dataframe_records", "non-empty"),
    ("split-without-data", {"dataframe_split": {"columns": ["a"]}}, JSON, 400, "dataframe_split", "object"),
    ("column-lengths", {"inputs": {"a": [1.0], "b": [1.0, 2.0], "n": [1], "plan": ["x"]}}, JSON, 422, "inputs", "shape"),
    ("csv-bad-number", b"a,b,n,plan\nx,2,3,basic\n", "text/csv", 422, "a", "type"),
    ("csv-bad-int", b"a,b,n,plan\n1,2,3.5,basic\n", "text/csv", 422, "n", "type"),
    ("csv-field-count", b"a,b,n,plan\n1,2,3\n", "text/csv", 422, "line 2", "shape"),
    ("csv-no-rows", b"a,b,n,plan\n", "text/csv", 422, "body", "non-empty"),
    ("csv-not-utf8", b"a,b,n,plan\n\xff,2,3,x\n", "text/csv", 400, "body", "utf-8"),
    ("csv-huge-field", b"a,b,n,plan\n1,2,3," + b"x" * 200_000 + b"\n", "text/csv", 400, "body", "csv"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "content_type", "status", "field", "rule"),
                         [case[1:] for case in BAD], ids=[case[0] for case in BAD])  # fmt: skip
def test_bad_input_is_refused_naming_field_and_rule(
    payload: Any, content_type: str, status: int, field: str, rule: str
) -> None:
    with pytest.raises(InputError) as error:
        invocation(payload, content_type=content_type)
    assert (error.value.http_status, error.value.field, error.value.rule) == (status, field, rule)
    assert error.value.message


BAD_V2: list[tuple[str, Any, str, str]] = [
    ("no-inputs", {"inputs": []}, "inputs", "array"),
    ("no-name", {"inputs": [{"shape": [1], "datatype": "FP64", "data": [1.0]}]}, "inputs[0].name", "required"),
    ("bad-datatype", {"inputs": [{"name": "a", "shape": [1], "datatype": "FLOAT", "data": [1.0]}]}, "inputs[0].datatype", "datatype"),
    ("data-vs-shape", {"inputs": [{"name": "a", "shape": [3], "datatype": "FP64", "data": [1.0]}]}, "inputs[0].data", "shape"),
    ("bytes-for-double", {"inputs": [{"name": "a", "shape": [1], "datatype": "BYTES", "data": ["x"]}, {"name": "b", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, "inputs[0].datatype", "datatype"),
    ("2d-width", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, 3]}]}, "inputs[0].shape", "shape"),
    ("missing-column", {"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, "b", "required"),
    ("string-value", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, "x"]}]}, "b", "type"),
    ("column-shape", {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}, {"name": "b", "shape": [1], "datatype": "FP64", "data": [1.0]}]}, "inputs[0].shape", "shape"),
    ("nested-vs-shape", {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [[1], [2]]}]}, "inputs[0].data", "shape"),
    ("nested-ragged", {"inputs": [{"name": "a", "shape": [2], "datatype": "FP64", "data": [[1, 2], [3]]}]}, "inputs[0].data", "shape"),
    ("shape-overflows", {"inputs": [{"name": "x", "shape": [2**32, 2**32], "datatype": "FP64", "data": []}]}, "inputs[0].data", "shape"),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "field", "rule"), [c[1:] for c in BAD_V2],
                         ids=[c[0] for c in BAD_V2])  # fmt: skip
def test_bad_v2_input_is_refused(payload: Any, field: str, rule: str) -> None:
    with pytest.raises(InputError) as error:
        parse_v2(payload, NUMERIC)
    assert (error.value.field, error.value.rule) == (field, rule)
    assert 400 <= error.value.http_status < 500


def test_binary_and_datetime_columns() -> None:
    schema = InputSchema(columns=(Column("blob", "binary"), Column("at", "datetime")))
    inputs = invocation(
        {"dataframe_records": [{"blob": "aGk=", "at": "2026-01-02T03:04:05Z"}]}, schema
    )
    frame = frame_of(inputs, schema)
    assert frame["blob"][0] == b"hi" and str(frame["at"][0]).startswith("2026-01-02 03:04:05")
    for record, rule in (({"blob": "!!", "at": "2026-01-02"}, "base64"),
                         ({"blob": "aGk=", "at": "yesterday"}, "datetime")):  # fmt: skip
        with pytest.raises(InputError) as error:
            invocation({"dataframe_records": [record]}, schema)
        assert error.value.rule == rule


def test_datetime_columns_arrive_by_csv_and_in_input_examples() -> None:
    """Both hand the checks datetime64 arrays, which must not be turned into integers."""
    import pandas as pd

    from eventops.serving.models import example_inputs

    schema = InputSchema(columns=(Column("plan", "string"), Column("at", "datetime")))
    inputs = invocation(b"plan,at\nbasic,2026-01-02T03:04:05\n", schema, "text/csv")
    assert str(frame_of(inputs, schema)["at"][0]) == "2026-01-02 03:04:05"
    example = pd.DataFrame({"plan": ["basic"], "at": pd.to_datetime(["2026-01-02"])})
    assert str(frame_of(example_inputs(schema, example), schema)["at"][0]) == "2026-01-02 00:00:00"


def test_v2_tensors_with_arrays_among_their_values_are_refused_not_500() -> None:
    deep = orjson.loads(b"[" * 70 + b"1" + b"]" * 70)
    bodies = [
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [1, 2, [3]]}]},
        {"inputs": [{"name": "x", "shape": [1], "datatype": "FP64", "data": deep}]},
        {"inputs": [{"name": "x", "shape": [2**32, 2**32], "datatype": "FP64", "data": []}]},
    ]
    for model in (tensor_model(), fake_model(schema=InputSchema(), name="tensor")):
        with test_client(create_app(model)) as client:
            for body in bodies:
                response = client.post("/v2/models/tensor/infer", json=body)
                assert response.status_code == 422, response.text
                assert response.json()["rule"] == "shape"


# ---------------------------------------------------------------------- through the app
def test_the_app_answers_4xx_with_a_json_body_never_500() -> None:
    app = create_app(fake_model())
    with test_client(app) as client:
        ok = client.post(
            "/invocations", json={"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2]]}}
        )
        assert ok.status_code == 200 and ok.json()["predictions"] == [12.0]
        cases = {
            "/invocations": [({"dataframe_records": [{"a": 1}]}, 422, "b", "required"),
                             ({"inputs": [["x", 1]]}, 422, "a", "type")],
            "/v2/models/linear/infer": [({"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]},
                                         422, "b", "required")],
        }  # fmt: skip
        for path, bodies in cases.items():
            for body, status, field, rule in bodies:
                response = client.post(path, json=body)
                assert response.status_code == status, response.text
                error = response.json()
                if path.startswith("/v2"):
                    assert (error["field"], error["rule"]) == (field, rule)
                    assert isinstance(error["error"], str)
                else:
                    assert (error["error"]["field"], error["error"]["rule"]) == (field, rule)
                    assert error["error_code"] == "BAD_REQUEST"
        big = create_app(fake_model(), max_body_bytes=100)
    with test_client(big) as client:
        response = client.post("/invocations", content=b"x" * 200, headers={"content-type": JSON})
        assert response.status_code == 413 and response.json()["error"]["rule"] == "max-size"
        assert client.get("/nowhere").status_code == 404
        assert client.get("/invocations").status_code == 405
