"""Transforms: derived datasets with lineage, idempotent per input batch, driven by events."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from conftest import wait_for
from eventops.errors import NotFound, ValidationError
from eventops.events.bus import Bus, dlq_topic, open_bus
from eventops.events.envelope import Event
from eventops.events.subscription import RetryPolicy
from eventops.lake import Lake, LakeStorage
from eventops.lake.transforms import (
    Transform,
    TransformRunner,
    lineage,
    load_transforms,
    output_batch_id,
    run_transform,
)
from eventops.store import OutboxRelay, Store

TOTALS = "SELECT country, sum(amount) AS total, count(*) AS orders FROM batch GROUP BY country"


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.upgrade()
    yield Lake(store, LakeStorage(str(tmp_path / "lake")))
    store.close()


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module holding transform functions, as a user's project would."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_transforms.py").write_text(
        textwrap.dedent(
            """
            import pyarrow.compute as pc

            def large_orders(table):
                return table.filter(pc.greater(table.column("amount"), 15.0))

            def not_a_table(table):
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(folder))
    return folder


def orders(lake: Lake, amounts: list[float], countries: list[str]) -> str:
    ids = list(range(len(amounts)))
    table = pa.table({"id": ids, "amount": amounts, "country": countries})
    return lake.commit_batch("orders", table, source="test").batch_id


def test_sql_transform_writes_a_derived_batch_with_lineage(lake: Lake) -> None:
    batch = orders(lake, [10.0, 20.0, 5.0], ["fr", "de", "fr"])
    totals = Transform(name="order_totals", source="orders", target="totals", sql=TOTALS)
    result = run_transform(lake, totals, batch)
    assert result.uri is not None and result.rows_accepted == 2
    assert result.batch_id == output_batch_id("order_totals", batch)
    rows = sorted(lake.read("totals").to_pylist(), key=lambda r: r["country"])
    assert rows == [
        {"country": "de", "total": 20.0, "orders": 1},
        {"country": "fr", "total": 15.0, "orders": 2},
    ]
    (written,) = lake.batches("totals")
    assert written.lineage == [batch]
    assert written.source == "transform:order_totals"
    assert [b.id for b in lineage(lake, "totals", written.id)] == [batch]


def test_integer_sums_stay_integers_in_the_catalog(lake: Lake) -> None:
    """DuckDB's sum(int64) is a HUGEINT; the target keeps an int64 the catalog can read back."""
    batch = lake.commit_batch(
        "clicks", pa.table({"page": ["a", "a", "b"], "n": [1, 2, 3]}), source="test"
    )
    per_page = Transform(
        name="per_page",
        source="clicks",
        target="pages",
        sql="SELECT page, sum(n) AS n FROM batch GROUP BY page",
    )
    run_transform(lake, per_page, batch.batch_id)
    assert lake.schema("pages").field("n").type == pa.int64()
    assert sorted(lake.read("pages").to_pylist(), key=lambda r: r["page"]) == [
        {"page": "a", "n": 3},
        {"page": "b", "n": 3},
    ]


def test_sql_can_read_the_whole_source_dataset(lake: Lake) -> None:
    orders(lake, [10.0, 30.0], ["fr", "fr"])
    batch = orders(lake, [20.0], ["de"])
    share = Transform(
        name="share",
        source="orders",
        target="shares",
        sql="SELECT b.id, b.amount / (SELECT sum(amount) FROM source) AS share FROM batch AS b",
    )
    run_transform(lake, share, batch)
    assert lake.read("shares").to_pylist() == [{"id": 0, "share": pytest.approx(20.0 / 60.0)}]


def test_python_callable_and_reference_string_give_the_same_result(
    lake: Lake, module_dir: Path
) -> None:
    batch = orders(lake, [10.0, 20.0, 30.0], ["fr", "de", "it"])

    def large(table: pa.Table) -> pa.Table:
        return table.filter(pc.greater(table.column("amount"), 15.0))

    by_callable = Transform(name="big_a", source="orders", target="big_a", function=large)
    by_reference = Transform(
        name="big_b", source="orders", target="big_b", function="my_transforms:large_orders"
    )
    run_transform(lake, by_callable, batch)
    run_transform(lake, by_reference, batch)
    assert lake.read("big_a").column("id").to_pylist() == [1, 2]
    assert lake.read("big_b").to_pylist() == lake.read("big_a").to_pylist()
    assert lake.batches("big_b")[0].lineage == [batch]


def test_rerunning_a_transform_on_the_same_batch_is_a_no_op(lake: Lake) -> None:
    batch = orders(lake, [10.0], ["fr"])
    totals = Transform(name="order_totals", source="orders", target="totals", sql=TOTALS)
    first = run_transform(lake, totals, batch)
    again = run_transform(lake, totals, batch)
    assert not first.duplicate and again.duplicate
    assert again.batch_id == first.batch_id
    assert len(lake.batches("totals")) == 1


def test_lineage_walks_a_chain_back_to_the_original_batch(lake: Lake) -> None:
    batch = orders(lake, [10.0, 20.0], ["fr", "de"])
    step1 = Transform(name="step1", source="orders", target="cleaned", sql="SELECT * FROM batch")
    step2 = Transform(name="step2", source="cleaned", target="totals", sql=TOTALS)
    middle = run_transform(lake, step1, batch)
    last = run_transform(lake, step2, middle.batch_id)
    chain = lineage(lake, "totals", last.batch_id)
    assert [(b.dataset, b.id) for b in chain] == [("cleaned", middle.batch_id), ("orders", batch)]
    with pytest.raises(NotFound):
        lineage(lake, "orders", last.batch_id)  # that batch is not in orders


def test_an_old_batch_gets_columns_added_since_as_nulls(lake: Lake) -> None:
    old = orders(lake, [10.0], ["fr"])
    lake.commit_batch(
        "orders",
        pa.table({"id": [1], "amount": [5.0], "country": ["de"], "coupon": ["x"]}),
        source="test",
    )
    coupons = Transform(
        name="coupons", source="orders", target="coupons", sql="SELECT id, coupon FROM batch"
    )
    run_transform(lake, coupons, old)
    assert lake.read("coupons").to_pylist() == [{"id": 0, "coupon": None}]


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"target": "orders", "sql": "SELECT 1"}, "target", "differs-from-source"),
        ({"target": "t"}, "sql", "one-of"),
        ({"target": "t", "sql": "SELECT 1", "function": "a:b"}, "sql", "one-of"),
        ({"target": "t", "sql": "DELETE FROM batch"}, "sql", "read-only"),
        ({"target": "t", "function": "no_such_module:f"}, "function", "importable"),
        ({"target": "t", "function": "no_colon"}, "function", "reference"),
        ({"target": "Bad-Name", "sql": "SELECT 1"}, "target", "pattern"),
    ],
)
def test_bad_transforms_are_refused_naming_the_field(kwargs: dict, field: str, rule: str) -> None:
    with pytest.raises(ValidationError) as info:
        Transform(name="t1", source="orders", **kwargs)
    assert (info.value.field, info.value.rule) == (field, rule)


def test_a_batch_of_another_dataset_or_an_unknown_batch_is_refused(lake: Lake) -> None:
    other = lake.commit_batch("users", pa.table({"id": [1]}), source="test").batch_id
    totals = Transform(name="order_totals", source="orders", target="totals", sql=TOTALS)
    with pytest.raises(ValidationError) as info:
        run_transform(lake, totals, other)
    assert info.value.rule == "from-source"
    with pytest.raises(NotFound):
        run_transform(lake, totals, "no-such-batch")


def test_a_function_that_returns_no_table_is_named(lake: Lake, module_dir: Path) -> None:
    batch = orders(lake, [1.0], ["fr"])
    broken = Transform(
        name="broken", source="orders", target="t", function="my_transforms:not_a_table"
    )
    with pytest.raises(ValidationError) as info:
        run_transform(lake, broken, batch)
    assert (info.value.field, info.value.rule) == ("function", "returns-table")
    assert "t" not in lake.names()


def test_transforms_load_from_toml_and_cycles_are_refused(lake: Lake, tmp_path: Path) -> None:
    text = """
    [[transforms]]
    name = "a_to_b"
    source = "a"
    target = "b"
    sql = "SELECT * FROM batch"
    """
    (loaded,) = load_transforms(textwrap.dedent(text), toml=True)
    assert (loaded.name, loaded.source, loaded.target) == ("a_to_b", "a", "b")
    with pytest.raises(ValidationError) as info:
        load_transforms(
            '{"transforms": [{"name": "x", "source": "a", "sql": "SELECT 1"}]}', toml=False
        )
    assert info.value.field == "transforms[0].target"
    back = Transform(name="b_to_a", source="b", target="a", sql="SELECT * FROM batch")
    with pytest.raises(ValidationError) as info:
        TransformRunner(open_bus(f"sqlite:///{tmp_path}/e.db"), lake, [loaded, back])
    assert info.value.rule == "acyclic" and "a -> b -> a" in str(info.value)


def read_all(bus: Bus, topic: str | None = None) -> list[Event]:
    consumer = bus.consumer(None, [topic] if topic else None, start="earliest")
    try:
        return [r.event for r in consumer.poll(0.5, 1000) if r.event is not None]
    finally:
        consumer.close()


def test_runner_transforms_each_ingested_batch_and_announces_it(lake: Lake, tmp_path: Path) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/e.db")
    relay = OutboxRelay(lake.store, bus)
    totals = Transform(name="order_totals", source="orders", target="totals", sql=TOTALS)
    runner = TransformRunner(bus, lake, [totals], group="transforms-test", relay=relay).start()
    try:
        batch = orders(lake, [10.0, 20.0], ["fr", "fr"])
        relay.relay_once()
        wait_for(lambda: "totals" in lake.names() and len(lake.batches("totals")) == 1)
        source_event = next(
            e for e in read_all(bus) if e.type == "dataset.batch.ingested" and e.subject == "orders"
        )

        def derived() -> list[Event]:
            return [
                e
                for e in read_all(bus)
                if e.subject == "totals" and e.type == "dataset.batch.ingested"
            ]

        wait_for(derived)
        (announced,) = derived()
        assert announced.causationid == source_event.id
        assert announced.correlationid == source_event.id
        assert announced.data["lineage"] == [batch]
        assert announced.data["batch_id"] == output_batch_id("order_totals", batch)
        # the same event delivered again (a crash before the offset commit): still one batch
        runner.handle(source_event)
        assert len(lake.batches("totals")) == 1
        assert lake.read("totals").to_pylist() == [{"country": "fr", "total": 30.0, "orders": 2}]
    finally:
        runner.stop()
        bus.close()


def test_a_failing_transform_is_retried_then_dead_lettered(lake: Lake, tmp_path: Path) -> None:
    bus = open_bus(f"sqlite:///{tmp_path}/e.db")
    relay = OutboxRelay(lake.store, bus)
    calls: list[int] = []

    def explode(table: pa.Table) -> pa.Table:
        calls.append(table.num_rows)
        raise RuntimeError("boom")

    failing = Transform(name="explode", source="orders", target="never", function=explode)
    retry = RetryPolicy(max_attempts=2, initial_backoff=0.01)
    runner = TransformRunner(
        bus, lake, [failing], group="failing", relay=relay, retry=retry
    ).start()
    try:
        orders(lake, [1.0], ["fr"])
        relay.relay_once()
        wait_for(lambda: read_all(bus, dlq_topic(bus.prefix)))
        (dead,) = read_all(bus, dlq_topic(bus.prefix))
        assert dead.type == "dataset.batch.ingested"
        assert dead.extensions["dlqgroup"] == "failing"
        assert "boom" in str(dead.extensions["dlqerror"])
        assert len(calls) == 2
        assert "never" not in lake.names()
    finally:
        runner.stop()
        bus.close()
