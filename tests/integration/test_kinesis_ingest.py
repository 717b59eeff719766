"""Kinesis Data Streams into the lake, against moto's server on loopback.

moto neither throttles nor closes a shard's iterator after a split, so those two are injected
with botocore hooks on the ingestor's own client: a `before-call` hook that answers instead of
the server (throttling), and an `after-call` hook that drops `NextShardIterator` from a closed
shard's last answer (the end of a parent shard, as AWS reports it).
"""

from __future__ import annotations

import json
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from conftest import wait_for
from eventops.cli import app
from eventops.errors import ConfigError, ValidationError
from eventops.events.aws import AwsError, Backoff
from eventops.ingest.kinesis import SHARD_END, KinesisIngestor, parse_kinesis_url, record_rows
from eventops.lake import Lake, LakeStorage
from eventops.store import Store, StreamCheckpointRow

FAST = Backoff(attempts=5, base=0.001, cap=0.01)


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield Lake(store, LakeStorage(str(tmp_path / "lake")))
    store.close()


@pytest.fixture
def stream(aws: Any) -> str:
    name = f"orders-{uuid.uuid4().hex[:8]}"
    client = aws.client("kinesis")
    client.create_stream(StreamName=name, ShardCount=2)
    client.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 0.1})
    return name


def put(aws_server: Any, stream: str, start: int, stop: int) -> None:
    aws_server.client("kinesis").put_records(
        StreamName=stream,
        Records=[
            {"Data": json.dumps({"seq": i, "amount": i * 1.5}).encode(), "PartitionKey": f"c{i}"}
            for i in range(start, stop)
        ],
    )


def seqs(lake: Lake, dataset: str = "orders") -> list[int]:
    return sorted(lake.read(dataset).column("seq").to_pylist())


def ingestor(lake: Lake, stream: str, **kwargs: Any) -> KinesisIngestor:
    options: dict[str, Any] = {"max_seconds": 0.2, "poll_interval": 0.05, "backoff": FAST}
    return KinesisIngestor(lake, "orders", stream, **(options | kwargs))


def test_records_of_every_shard_land_once(aws: Any, lake: Lake, stream: str) -> None:
    put(aws, stream, 0, 120)
    first = ingestor(lake, f"kinesis://{stream}?region=us-east-1")
    stats = first.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == list(range(120))
    assert stats.shards == 2
    positions = lake.checkpoint(first.checkpoint_source)
    assert set(positions) == {"shardId-000000000000", "shardId-000000000001"}
    # A restart resumes after the checkpoint: nothing twice, new records once.
    put(aws, stream, 120, 150)
    again = ingestor(lake, stream)
    again.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == list(range(150))
    assert again.stats.records == 30


def test_a_crash_before_the_commit_loses_nothing_and_duplicates_nothing(
    aws: Any, lake: Lake, stream: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(aws, stream, 0, 40)
    crashing = ingestor(lake, stream)
    real = lake.commit_batch

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(lake, "commit_batch", crash)
    with pytest.raises(RuntimeError, match="killed"):
        crashing.run(idle_timeout=0.5, timeout=30)
    assert lake.checkpoint(crashing.checkpoint_source) == {}
    monkeypatch.setattr(lake, "commit_batch", real)
    # The same records read again make the same batch id: a second run after a commit that
    # happened but whose positions were lost would be a duplicate, not new rows.
    second = ingestor(lake, stream)
    second.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == list(range(40))
    third = ingestor(lake, stream)
    third.run(idle_timeout=0.3, timeout=30)
    assert third.stats.records == 0
    assert seqs(lake) == list(range(40))


def test_the_same_records_make_the_same_batch(aws: Any, lake: Lake, stream: str) -> None:
    put(aws, stream, 0, 10)
    first = ingestor(lake, stream, max_rows=10_000)
    first.run(idle_timeout=0.5, timeout=30)
    # Forget the checkpoint, as if the commit's positions had been lost: the batch comes back
    # identical and the lake refuses it as a duplicate.
    with lake.store.session() as session:
        session.query(StreamCheckpointRow).filter_by(source=first.checkpoint_source).delete()
    again = ingestor(lake, stream, max_rows=10_000)
    again.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == list(range(10))
    assert again.stats.duplicates == 1


def test_malformed_records_go_to_quarantine_and_the_shard_moves_on(
    aws: Any, lake: Lake, stream: str
) -> None:
    client = aws.client("kinesis")
    key = "same-key"  # one shard, in order
    for data in (b'{"seq": 1}', b"not json", b"\xff\xfe", b"7", b"{}", b'[{"seq": 2}, {"seq": 3}]'):
        client.put_record(StreamName=stream, Data=data, PartitionKey=key)
    run = ingestor(lake, stream)
    stats = run.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == [1, 2, 3]
    assert stats.quarantined == 4
    rejections = lake.rejections("orders")
    reasons = " | ".join(r.reason for r in rejections)
    for rule in ("rule: json", "rule: utf-8", "rule: records"):
        assert rule in reasons
    kept = [json.loads(line) for r in rejections for line in _read(r.uri).splitlines()]
    assert all(k["sequence_number"] and k["shard"].startswith("shardId-") for k in kept)
    assert {k["partition_key"] for k in kept} == {key}
    # Nothing is read or quarantined twice by a restart.
    again = ingestor(lake, stream)
    again.run(idle_timeout=0.3, timeout=30)
    assert again.stats.records == 0
    assert len(lake.rejections("orders")) == 4


def _read(uri: str) -> str:
    return Path(uri.removeprefix("file://")).read_text()


def throttle_first(client: Any, operation: str, times: int) -> list[int]:
    calls = [0]

    def handler(**_: Any) -> Any:
        calls[0] += 1
        if calls[0] <= times:
            error = {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}
            return types.SimpleNamespace(status_code=400, headers={}), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        return None

    client.meta.events.register(f"before-call.kinesis.{operation}", handler)
    return calls


def test_throttled_reads_are_retried_with_backoff(aws: Any, lake: Lake, stream: str) -> None:
    put(aws, stream, 0, 20)
    client = aws.client("kinesis")
    calls = throttle_first(client, "GetRecords", 3)
    run = ingestor(lake, stream, client=client)
    run.run(idle_timeout=0.5, timeout=30)
    assert seqs(lake) == list(range(20))
    assert calls[0] > 3
    assert run.stats.retries.throttled == 3
    assert run.stats.retries.codes == {"ProvisionedThroughputExceededException": 3}


def test_a_throttle_that_never_ends_fails_with_the_code(aws: Any, lake: Lake, stream: str) -> None:
    put(aws, stream, 0, 5)
    client = aws.client("kinesis")
    throttle_first(client, "GetRecords", 1_000)
    run = ingestor(lake, stream, client=client)
    with pytest.raises(AwsError) as info:
        run.run(idle_timeout=2, timeout=30)
    assert info.value.rule == "ProvisionedThroughputExceededException"


def test_a_split_shard_is_read_to_its_end_before_its_children(
    aws: Any, lake: Lake, stream: str
) -> None:
    put(aws, stream, 0, 30)
    client = aws.client("kinesis")
    parent = client.list_shards(StreamName=stream)["Shards"][0]
    middle = (int(parent["HashKeyRange"]["EndingHashKey"]) + 1) // 2
    client.split_shard(
        StreamName=stream, ShardToSplit=parent["ShardId"], NewStartingHashKey=str(middle)
    )
    shards = client.list_shards(StreamName=stream)["Shards"]
    children = [s["ShardId"] for s in shards if s.get("ParentShardId") == parent["ShardId"]]
    assert len(children) == 2
    put(aws, stream, 30, 60)

    # AWS ends a closed shard's reads with no NextShardIterator; moto keeps handing one out.
    # Iterators are opaque, so the hooks follow which shard each one belongs to.
    shard_of: dict[str, str] = {}

    def remember(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["shard"] = params.get("ShardId") or shard_of.get(params.get("ShardIterator", ""))

    def issued(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        shard_of[parsed["ShardIterator"]] = context["shard"]

    def end_closed_parent(parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        if context["shard"] == parent["ShardId"] and not parsed.get("Records"):
            parsed.pop("NextShardIterator", None)
        elif parsed.get("NextShardIterator"):
            shard_of[parsed["NextShardIterator"]] = context["shard"]

    for operation in ("GetShardIterator", "GetRecords"):
        client.meta.events.register(f"before-parameter-build.kinesis.{operation}", remember)
    client.meta.events.register("after-call.kinesis.GetShardIterator", issued)
    client.meta.events.register("after-call.kinesis.GetRecords", end_closed_parent)
    run = ingestor(lake, stream, client=client)
    run.run(idle_timeout=0.8, timeout=30)
    assert seqs(lake) == list(range(60))
    positions = lake.checkpoint(run.checkpoint_source)
    assert positions[parent["ShardId"]] == SHARD_END
    assert run.stats.shards_finished == 1
    assert run.stats.shards == 4
    # A restart does not read the finished parent again.
    again = ingestor(lake, stream, client=client)
    again.run(idle_timeout=0.3, timeout=30)
    assert again.stats.records == 0


def test_start_at_latest_skips_what_was_there(aws: Any, lake: Lake, stream: str) -> None:
    put(aws, stream, 0, 10)
    run = ingestor(lake, f"kinesis://{stream}?start=latest")
    run.start_thread(timeout=20)
    try:
        wait_for(lambda: run.stats.shards == 2, timeout=10)  # iterators taken at LATEST
        put(aws, stream, 10, 15)

        def landed() -> bool:
            try:
                return seqs(lake) == list(range(10, 15))
            except Exception:
                return False

        wait_for(landed, timeout=15)
    finally:
        run.stop()
    assert run.error is None


@pytest.mark.parametrize(
    ("url", "field", "rule"),
    [
        ("kafka://orders", "source", "url-scheme"),
        ("kinesis://", "source", "url-name"),
        ("kinesis://orders?shards=1", "source", "known-option"),
        ("kinesis://orders?start=middle", "start", "one-of"),
    ],
)
def test_bad_urls_name_the_field_and_rule(url: str, field: str, rule: str) -> None:
    with pytest.raises((ConfigError, ValidationError)) as info:
        parse_kinesis_url(url)
    assert (info.value.field, info.value.rule) == (field, rule)


def test_record_rows_say_why() -> None:
    assert record_rows(b'{"a": 1}') == [{"a": 1}]
    assert record_rows(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]
    assert "rule: utf-8" in str(record_rows(b"\xff"))
    assert "rule: json" in str(record_rows(b"{"))
    assert "got a number" in str(record_rows(b"3"))


def test_an_unknown_stream_is_an_error_with_the_aws_code(aws: Any, lake: Lake) -> None:
    run = ingestor(lake, f"missing-{uuid.uuid4().hex[:6]}")
    with pytest.raises(AwsError) as info:
        run.run(timeout=5)
    assert info.value.rule == "ResourceNotFoundException"


def test_the_cli_ingests_and_summarises(aws: Any, home: Path, stream: str) -> None:
    put(aws, stream, 0, 25)
    result = CliRunner().invoke(
        app,
        [
            "ingest",
            "kinesis",
            "orders",
            f"kinesis://{stream}",
            "--idle",
            "0.5",
            "--max-seconds",
            "0.2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "rows accepted" in result.output
    assert "25" in result.output
    bad = CliRunner().invoke(app, ["ingest", "kinesis", "orders", "kinesis://x?colour=red"])
    assert bad.exit_code == 2
    assert "known-option" in bad.output
