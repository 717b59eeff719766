"""HTTP ingestion on a real lake (SQLite store, local folder) and a real SQLite bus."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from conftest import wait_for
from eventops.events.bus import Bus, open_bus
from eventops.events.envelope import Event
from eventops.ingest.http import create_ingest_app
from eventops.lake import DatasetSpec, Lake, LakeStorage, Range
from eventops.store import OutboxRelay, Store

NDJSON = {"content-type": "application/x-ndjson"}
TOKEN = "t0ken-for-tests"


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield Lake(store, LakeStorage(str(tmp_path / "lake")))
    store.close()


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[Bus]:
    opened = open_bus(f"sqlite:///{tmp_path}/e.db")
    yield opened
    opened.close()


@pytest.fixture
def client(lake: Lake, bus: Bus) -> Iterator[TestClient]:
    with TestClient(create_ingest_app(lake, relay=OutboxRelay(lake.store, bus))) as test_client:
        yield test_client


def bus_events(bus: Bus) -> list[Event]:
    reader = bus.consumer(None, None, start="earliest")
    found: list[Event] = []
    try:
        while batch := reader.poll(0.2, 1000):
            found.extend(r.event for r in batch if r.event is not None)
    finally:
        reader.close()
    return found


def assert_error(response: httpx.Response, status: int, field: str, rule: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["field"], error["rule"]) == (field, rule), error
    assert error["message"]
    return str(error["message"])


# ---------------------------------------------------------------------- accepted input
def test_a_json_array_lands_in_the_lake_and_its_event_on_the_bus(
    client: TestClient, lake: Lake, bus: Bus
) -> None:
    records = [
        {"id": 1, "city": "Lyon", "tags": ["a", "b"]},
        {"id": 2, "score": 0.5, "meta": {"k": 1}},  # keys the first record lacks
        {"id": 3, "city": None},
    ]
    response = client.post("/datasets/clicks/records", json=records)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["dataset"] == "clicks"
    assert (body["rows_accepted"], body["rows_rejected"], body["schema_version"]) == (3, 0, 1)
    assert body["uri"].endswith(".parquet")
    assert lake.storage.exists(lake.storage.path_of(body["uri"]))
    assert body["quarantine_uri"] is None
    rows = sorted(lake.read("clicks").to_pylist(), key=lambda r: r["id"])
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert set(rows[0]) == {"id", "city", "tags", "score", "meta"}  # union of the keys
    assert rows[1]["score"] == 0.5 and rows[0]["score"] is None
    assert json.loads(rows[0]["tags"]) == ["a", "b"]  # nested values kept as JSON text
    assert json.loads(rows[1]["meta"]) == {"k": 1}
    ingested = [e for e in bus_events(bus) if e.type == "dataset.batch.ingested"]
    assert [e.data["batch_id"] for e in ingested] == [body["batch_id"]]
    assert ingested[0].data["rows"] == 3
    assert OutboxRelay(lake.store, bus).pending_count() == 0


def test_ndjson_is_accepted_and_blank_lines_ignored(client: TestClient, lake: Lake) -> None:
    body = b'{"id": 1, "v": "a"}\n\n{"id": 2, "v": "b"}\r\n{"id": 3}\n'
    response = client.post("/datasets/events/records", content=body, headers=NDJSON)
    assert response.status_code == 201, response.text
    assert response.json()["rows_accepted"] == 3
    assert sorted(r["id"] for r in lake.read("events").to_pylist()) == [1, 2, 3]


def test_later_batches_evolve_the_schema(client: TestClient, lake: Lake) -> None:
    assert client.post("/datasets/evolving/records", json=[{"a": 1}]).status_code == 201
    second = client.post("/datasets/evolving/records", json=[{"a": 2, "b": "new"}])
    assert second.status_code == 201, second.text
    assert second.json()["schema_version"] == 2
    assert lake.read("evolving").num_rows == 2


def test_mixed_value_types_quarantine_only_the_rows_that_do_not_fit(
    client: TestClient, lake: Lake
) -> None:
    assert client.post("/datasets/typed/records", json=[{"n": 1}]).status_code == 201
    response = client.post("/datasets/typed/records", json=[{"n": 2}, {"n": "three"}, {"n": 4}])
    assert response.status_code == 201, response.text
    assert (response.json()["rows_accepted"], response.json()["rows_rejected"]) == (2, 1)
    assert sorted(lake.read("typed").column("n").to_pylist()) == [1, 2, 4]


def test_bad_rows_are_quarantined_and_counted(client: TestClient, lake: Lake) -> None:
    lake.declare(DatasetSpec(name="scores", checks=[Range(column="score", min=0)]))
    records = [{"user": "a", "score": 3}, {"user": "b", "score": -1}, {"user": "c", "score": 7}]
    response = client.post("/datasets/scores/records", json=records)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["rows_accepted"], body["rows_rejected"]) == (2, 1)
    kept_file = lake.storage.read_bytes(lake.storage.path_of(body["quarantine_uri"]))
    kept = [json.loads(line) for line in kept_file.decode().splitlines()]
    assert [k["row"]["user"] for k in kept] == ["b"]
    assert kept[0]["errors"][0]["field"] == "score"
    assert kept[0]["errors"][0]["rule"] == "range"
    assert sorted(lake.read("scores").column("user").to_pylist()) == ["a", "c"]


def test_a_rejected_batch_answers_422_with_the_reason(client: TestClient, lake: Lake) -> None:
    lake.declare(
        DatasetSpec(name="strict", checks=[Range(column="x", min=0)], on_bad_rows="reject_batch")
    )
    response = client.post("/datasets/strict/records", json=[{"x": 1}, {"x": -5}])
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["rows_accepted"], body["rows_rejected"]) == (0, 2)
    assert body["uri"] is None and body["quarantine_uri"]
    assert "reject_batch" in body["reason"]
    assert lake.batches("strict") == []
    assert lake.summary("strict")["rows_rejected"] == 2


def test_a_schema_conflict_rejects_the_batch(client: TestClient) -> None:
    assert client.post("/datasets/ints/records", json=[{"x": 1}]).status_code == 201
    response = client.post("/datasets/ints/records", json=[{"x": 1.5}])
    assert response.status_code == 422, response.text
    assert "x" in response.json()["reason"]


def test_an_idempotency_key_makes_a_retry_a_no_op(client: TestClient, lake: Lake) -> None:
    headers = {"idempotency-key": "upload-42"}
    first = client.post("/datasets/retried/records", json=[{"a": 1}], headers=headers)
    again = client.post("/datasets/retried/records", json=[{"a": 1}], headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["duplicate"] is True
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert lake.read("retried").num_rows == 1


# ---------------------------------------------------------------------- refused input
@pytest.mark.parametrize(
    ("content_type", "body", "status", "field", "rule", "named"),
    [
        ("application/json", b'[{"a": 1},', 400, "body", "json", "line 1"),
        ("application/json", b'{"a": 1}', 400, "body", "array", "array"),
        ("application/json", b'[{"a": 1}, 5, {"b": 2}]', 400, "records[1]", "object", "[1]"),
        ("application/json", b'[{"a": 1}, {}]', 400, "records[1]", "object", "empty"),
        ("application/json", b"[]", 400, "body", "non-empty", "empty"),
        ("application/json", b"", 400, "body", "non-empty", "empty"),
        ("application/json", b"\xff\xfe[", 400, "body", "json", "JSON"),
        ("application/x-ndjson", b'{"a": 1}\n{"a": \n', 400, "line 2", "json", "line 2"),
        ("application/x-ndjson", b'{"a": 1}\n\n[1, 2]\n', 400, "line 3", "object", "line 3"),
        ("application/x-ndjson", b"\n \n", 400, "body", "non-empty", "empty"),
        ("text/csv", b"a,b\n1,2\n", 415, "content-type", "media-type", "text/csv"),
        ("", b"[]", 415, "content-type", "media-type", "none"),
    ],
)
def test_bad_requests_get_a_clear_error(
    client: TestClient,
    lake: Lake,
    content_type: str,
    body: bytes,
    status: int,
    field: str,
    rule: str,
    named: str,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/datasets/inbox/records", content=body, headers=headers)
    assert named in assert_error(response, status, field, rule)
    assert "inbox" not in lake.names()  # nothing was written


def test_an_invalid_dataset_name_is_refused(client: TestClient) -> None:
    response = client.post("/datasets/Bad-Name/records", json=[{"a": 1}])
    assert "Bad-Name" in assert_error(response, 422, "name", "pattern")


def test_a_body_over_the_limit_is_refused_from_its_length(lake: Lake) -> None:
    with TestClient(create_ingest_app(lake, max_body_bytes=100)) as small:
        response = small.post("/datasets/big/records", json=[{"text": "x" * 200}])
        assert "100" in assert_error(response, 413, "body", "max-size")
        assert small.post("/datasets/big/records", json=[{"t": "x"}]).status_code == 201


def test_a_streamed_body_over_the_limit_is_refused_while_reading(lake: Lake) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer
        yield b"["
        for _ in range(50):
            yield b'{"text": "xxxxxxxxxxxxxxxxxxxx"},'
        yield b'{"text": "end"}]'

    with TestClient(create_ingest_app(lake, max_body_bytes=500)) as small:
        response = small.post("/datasets/big/records", content=chunks(), headers=NDJSON)
        assert_error(response, 413, "body", "max-size")
    assert "big" not in lake.names()


def test_a_token_is_required_when_set(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with TestClient(create_ingest_app(lake, token=TOKEN)) as guarded:
        missing = guarded.post("/datasets/safe/records", json=[{"a": 1}])
        assert_error(missing, 401, "authorization", "bearer-token")
        assert missing.headers["www-authenticate"] == "Bearer"
        basic = guarded.get("/health", headers={"authorization": f"Basic {TOKEN}"})
        assert_error(basic, 401, "authorization", "bearer-token")
        wrong = guarded.post(
            "/datasets/safe/records", json=[{"a": 1}], headers={"authorization": "Bearer nope"}
        )
        assert_error(wrong, 403, "authorization", "valid-token")
        assert_error(guarded.get("/health"), 401, "authorization", "bearer-token")
        good = {"authorization": f"Bearer {TOKEN}"}
        assert (
            guarded.post("/datasets/safe/records", json=[{"a": 1}], headers=good).status_code == 201
        )
        assert guarded.get("/health", headers=good).status_code == 200
    assert lake.read("safe").num_rows == 1
    assert TOKEN not in caplog.text


# ---------------------------------------------------------------------- reads
def test_a_dataset_summary_and_health(client: TestClient) -> None:
    client.post("/datasets/summed/records", json=[{"a": 1}, {"a": 2}])
    summary = client.get("/datasets/summed")
    assert summary.status_code == 200
    assert (summary.json()["rows"], summary.json()["batches"]) == (2, 1)
    assert_error(client.get("/datasets/unknown"), 404, "dataset", "exists")
    assert client.get("/health").json() == {"status": "ok"}
    assert_error(client.get("/nowhere"), 404, None, "http")  # type: ignore[arg-type]


def test_an_unreachable_store_answers_503(tmp_path: Path) -> None:
    nothing_listens = Store("postgresql+psycopg://nobody@127.0.0.1:1/none", connect_timeout=2)
    broken = Lake(nothing_listens, LakeStorage(str(tmp_path / "lake")))
    with TestClient(create_ingest_app(broken)) as unhealthy:
        response = unhealthy.get("/health")
    assert "unavailable" in assert_error(response, 503, "store.url", "reachable")


# ---------------------------------------------------------------------- the real server
def test_the_app_under_uvicorn_takes_records(lake: Lake, bus: Bus) -> None:
    app = create_ingest_app(lake, relay=OutboxRelay(lake.store, bus), token=TOKEN)
    # Bound before the server starts (no race for the port); IPPROTO_TCP so that asyncio sets
    # TCP_NODELAY on the connections (it checks the protocol number).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started or not thread.is_alive(), timeout=15)
        assert server.started, "uvicorn did not start"
        headers = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
            lines = b"".join(json.dumps({"n": i}).encode() + b"\n" for i in range(250))
            response = http.post("/datasets/live/records", content=lines, headers=NDJSON)
            assert response.status_code == 201, response.text
            assert response.json()["rows_accepted"] == 250
            assert http.get("/datasets/live").json()["rows"] == 250
            assert http.post("/datasets/live/records", json=[]).status_code == 400
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()
    assert sorted(lake.read("live").column("n").to_pylist()) == list(range(250))
    assert any(e.type == "dataset.batch.ingested" for e in bus_events(bus))
