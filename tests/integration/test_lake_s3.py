"""The lake on an S3-protocol server (moto, on loopback): the same code paths as a folder.

The endpoint reaches the product only through the standard ``AWS_ENDPOINT_URL_S3`` variable
(`moto_server.aws_env`); `Lake` and `LakeStorage` get nothing but the ``s3://`` URL. Objects are
checked with boto3, independently of the s3fs the product uses.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eventops.config import LakeSettings, Settings, StoreSettings
from eventops.lake import DatasetSpec, Lake, LakeStorage, Range
from eventops.store import Store
from moto_server import MotoServer, aws_env, start_moto

BUCKET = "eventops-lake"
KEY = re.compile(
    r"^(?P<prefix>[\w-]+)/datasets/(?P<name>[a-z][a-z0-9_]*)/v(?P<version>\d+)/"
    r"date=(?P<date>\d{4}-\d{2}-\d{2})/(?P<batch>[\w-]+)\.parquet$"
)


@pytest.fixture(scope="module")
def s3() -> Iterator[MotoServer]:
    """moto's S3 server for this module, a bucket, and the AWS variables pointing at it."""
    server = start_moto()
    try:
        server.create_bucket(BUCKET)
        with aws_env(server):
            yield server
    finally:
        server.stop()


@pytest.fixture
def client(s3: MotoServer) -> Any:
    return boto3.client("s3")  # endpoint and credentials from the environment, like s3fs


@pytest.fixture
def prefix(s3: MotoServer) -> str:
    """A prefix of the bucket for one test, so tests never see each other's objects."""
    return f"lake-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def lake(tmp_path: Path, prefix: str) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    try:
        yield Lake(store, LakeStorage(f"s3://{BUCKET}/{prefix}"))
    finally:
        store.close()


def keys(client: Any, prefix: str) -> list[str]:
    found: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        found += [item["Key"] for item in page.get("Contents", [])]
    return sorted(found)


def get(client: Any, key: str) -> bytes:
    body: bytes = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return body


def key_of(uri: str) -> str:
    bucket_prefix = f"s3://{BUCKET}/"
    assert uri.startswith(bucket_prefix), uri
    return uri[len(bucket_prefix) :]


def test_the_endpoint_comes_from_the_standard_aws_variable_alone(
    s3: MotoServer, tmp_path: Path, prefix: str, client: Any
) -> None:
    settings = Settings(
        home=tmp_path,
        store=StoreSettings(url=f"sqlite:///{tmp_path}/meta.db"),
        lake=LakeSettings(url=f"s3://{BUCKET}/{prefix}"),
    )
    lake = Lake.from_settings(settings)
    try:
        result = lake.commit_batch("churn", pa.table({"a": [1, 2]}), source="test")
    finally:
        lake.store.close()
    assert result.uri is not None and result.uri.startswith(f"s3://{BUCKET}/{prefix}/")
    assert keys(client, prefix) == [key_of(result.uri)]


def test_batches_round_trip_in_the_documented_layout_with_zstd(
    lake: Lake, client: Any, prefix: str
) -> None:
    days = {datetime.now(UTC).strftime("%Y-%m-%d")}
    first = pa.table({"id": [1, 2, 3], "score": [0.5, 1.5, 2.5], "plan": ["a", "b", "a"]})
    second = pa.table({"id": [4, 5], "score": [3.5, None], "plan": ["c", None]})
    results = [
        lake.commit_batch("churn", first, source="test", batch_id="batch-one"),
        lake.commit_batch("churn", second, source="test", batch_id="batch-two"),
    ]
    days.add(datetime.now(UTC).strftime("%Y-%m-%d"))  # the run may cross midnight

    objects = keys(client, prefix)
    assert objects == sorted(key_of(r.uri) for r in results if r.uri)
    for result in results:
        match = KEY.match(key_of(result.uri or ""))
        assert match is not None, result.uri
        assert match["prefix"] == prefix and match["name"] == "churn"
        assert match["version"] == "1" and match["batch"] == result.batch_id
        assert match["date"] in days
        metadata = pq.ParquetFile(io.BytesIO(get(client, key_of(result.uri or "")))).metadata
        codecs = {
            metadata.row_group(g).column(c).compression
            for g in range(metadata.num_row_groups)
            for c in range(metadata.num_columns)
        }
        assert codecs == {"ZSTD"}

    read = lake.read("churn").sort_by("id")
    assert read.column("id").to_pylist() == [1, 2, 3, 4, 5]
    assert read.column("score").to_pylist() == [0.5, 1.5, 2.5, 3.5, None]
    assert read.column("plan").to_pylist() == ["a", "b", "a", "c", None]
    assert lake.files("churn") == [f"{BUCKET}/{key_of(r.uri or '')}" for r in results]


def test_schema_evolves_across_batches_on_s3(lake: Lake, client: Any, prefix: str) -> None:
    one = lake.commit_batch("events", pa.table({"id": [1, 2], "x": [1.0, 2.0]}), source="t")
    two = lake.commit_batch("events", pa.table({"id": [3], "x": [3.0], "y": ["new"]}), source="t")
    three = lake.commit_batch("events", pa.table({"id": [4], "y": ["z"]}), source="t")

    assert (one.schema_version, two.schema_version, three.schema_version) == (1, 2, 2)
    assert "/datasets/events/v2/" in (two.uri or "")
    versions = [match["version"] for k in keys(client, prefix) if (match := KEY.match(k))]
    assert sorted(versions) == ["1", "2", "2"]
    assert lake.schema("events").names == ["id", "x", "y"]
    read = lake.read("events").sort_by("id")
    assert read.column("x").to_pylist() == [1.0, 2.0, 3.0, None]
    assert read.column("y").to_pylist() == [None, None, "new", "z"]


def test_bad_rows_go_to_a_quarantine_object_on_s3(lake: Lake, client: Any, prefix: str) -> None:
    lake.declare(DatasetSpec(name="ages", checks=[Range(column="age", min=0, max=150)]))
    table = pa.table({"id": [1, 2, 3, 4], "age": [30, -3, 40, 200]})
    result = lake.commit_batch("ages", table, source="test", batch_id="b-ages")

    assert (result.rows_accepted, result.rows_rejected) == (2, 2)
    assert result.quarantine_uri is not None
    quarantine_key = key_of(result.quarantine_uri)
    assert re.match(
        rf"^{prefix}/quarantine/ages/date=\d{{4}}-\d{{2}}-\d{{2}}/b-ages\.jsonl$", quarantine_key
    )
    assert quarantine_key in keys(client, prefix)
    lines = [json.loads(line) for line in get(client, quarantine_key).decode().splitlines()]
    assert [(r["row"]["id"], r["row"]["age"]) for r in lines] == [(2, -3), (4, 200)]
    assert {(e["field"], e["rule"]) for r in lines for e in r["errors"]} == {("age", "range")}
    assert lake.read("ages").column("id").to_pylist() == [1, 3]


def test_a_rejected_batch_is_kept_whole_on_s3(lake: Lake, client: Any, prefix: str) -> None:
    lake.commit_batch("typed", pa.table({"id": [1], "when": [1.5]}), source="t")
    bad = pa.table({"id": [2, 3], "when": [datetime(2026, 1, 1), datetime(2026, 1, 2)]})
    result = lake.commit_batch("typed", bad, source="t", batch_id="b-typed")

    assert result.rejected_batch and result.quarantine_uri is not None
    kept = pq.read_table(io.BytesIO(get(client, key_of(result.quarantine_uri))))
    assert kept.equals(bad)
    assert not [k for k in keys(client, prefix) if "b-typed" in k and "/datasets/" in k]


def test_an_orphan_object_is_never_read_and_is_vacuumed(
    lake: Lake, client: Any, prefix: str
) -> None:
    good = lake.commit_batch("churn", pa.table({"id": [1, 2]}), source="t")
    # A crash between the object PUT and the manifest commit leaves this behind: written by
    # another process, so this lake's s3fs has never seen it.
    orphan_key = f"{prefix}/datasets/churn/v1/date=2026-01-01/crashed.parquet"
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": [666]}), buffer, compression="zstd")
    client.put_object(Bucket=BUCKET, Key=orphan_key, Body=buffer.getvalue())

    assert lake.read("churn").column("id").to_pylist() == [1, 2]
    assert lake.orphans(min_age=timedelta(hours=1)) == []  # too young to be sure
    assert lake.orphans(min_age=timedelta(0)) == [f"{BUCKET}/{orphan_key}"]

    assert lake.vacuum(min_age=timedelta(0)) == [f"{BUCKET}/{orphan_key}"]
    assert keys(client, prefix) == [key_of(good.uri or "")]
    assert lake.orphans(min_age=timedelta(0)) == []
    assert lake.read("churn").column("id").to_pylist() == [1, 2]
