"""Trigger rules on their own: matching, validation, names, cron due times."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from eventops.errors import ValidationError
from eventops.events.envelope import Event
from eventops.pipelines.triggers import (
    EventRule,
    TriggerEngine,
    manual,
    on,
    on_drift,
    on_model_registered,
    on_new_data,
    schedule,
)


def batch(dataset: str = "churn", rows: int = 100) -> Event:
    data = {"dataset": dataset, "batch_id": "b1", "rows": rows, "schema_version": 1, "uri": "x"}
    return Event(type="dataset.batch.ingested", subject=dataset, data=data)


def at(hour: int, minute: int, second: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, second, tzinfo=UTC)


# ---------------------------------------------------------------------- matching
def test_an_event_rule_matches_its_type_and_filters() -> None:
    rule = on("dataset.batch.ingested", dataset="churn")
    assert rule.matches(batch("churn"))
    assert not rule.matches(batch("fraud"))
    assert not rule.matches(Event(type="dataset.batch.rejected", data={"dataset": "churn"}))


def test_globs_match_several_types_and_no_filter_matches_any_data() -> None:
    rule = on("dataset.*")
    assert rule.matches(batch("fraud"))
    assert rule.matches(Event(type="dataset.schema.changed", data=None))
    assert not rule.matches(Event(type="model.version.registered", data={}))


def test_a_filter_on_a_key_the_data_lacks_or_non_object_data_does_not_match() -> None:
    rule = on("myapp.thing.happened", region="eu")
    assert not rule.matches(Event(type="myapp.thing.happened", data={"other": 1}))
    assert not rule.matches(Event(type="myapp.thing.happened", data=[1, 2]))
    assert rule.matches(Event(type="myapp.thing.happened", data={"region": "eu"}))


def test_aliases_name_their_event_types_and_drop_unset_filters() -> None:
    assert on_drift().pattern == "monitor.drift.detected"
    assert on_drift().filters == {}
    assert on_drift("churn-drift", cooldown="1h").filters == {"monitor": "churn-drift"}
    rule = on_new_data("churn", min_new_rows=5000, cooldown="10m")
    assert (rule.pattern, rule.filters, rule.min_new_rows) == (
        "dataset.batch.ingested",
        {"dataset": "churn"},
        5000,
    )
    assert rule.cooldown_seconds == 600
    assert on_model_registered("churn").filters == {"model": "churn"}
    assert on_model_registered().pattern == "model.version.registered"


def test_params_are_a_dict_or_computed_from_the_event() -> None:
    assert on("dataset.*", params={"epochs": 3}).params_for(batch()) == {"epochs": 3}
    rule = on("dataset.*", params=lambda e: {"dataset": e.data["dataset"] if e else None})
    assert rule.params_for(batch("fraud")) == {"dataset": "fraud"}
    assert rule.params_for(None) == {"dataset": None}
    assert on("dataset.*").params_for(batch()) == {}


# ---------------------------------------------------------------------- validation
def error(make: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        make()
    return info.value


def test_an_unknown_type_of_a_reserved_namespace_is_refused() -> None:
    exc = error(lambda: on("dataset.batch.exploded"))
    assert exc.field == "event_type"
    assert exc.rule == "catalog"
    assert "on('dataset.batch.exploded')" in str(exc)
    assert error(lambda: on("pipeline.nothing.*")).rule == "catalog"


def test_user_namespaces_globs_and_audit_types_are_accepted() -> None:
    on("myapp.order.placed")
    on("*.failed")
    on("audit.*")
    on("audit.token.created")


def test_a_malformed_type_is_refused() -> None:
    assert error(lambda: on("Dataset Ingested")).field == "event_type"


@pytest.mark.parametrize("cooldown", ["10 minutes", "-5m", "soon"])
def test_a_malformed_cooldown_names_the_field_and_the_rule(cooldown: str) -> None:
    exc = error(lambda: on_new_data("churn", cooldown=cooldown))
    assert (exc.field, exc.rule) == ("cooldown", "duration")
    assert "dataset.batch.ingested" in exc.message


def test_min_new_rows_needs_a_type_whose_data_has_rows() -> None:
    exc = error(lambda: on_drift(min_new_rows=10))
    assert (exc.field, exc.rule) == ("min_new_rows", "rows-field")
    assert "monitor.drift.detected" in exc.message
    assert error(lambda: on("dataset.*", min_new_rows=10)).field == "min_new_rows"
    on("myapp.rows.loaded", min_new_rows=10)  # a user's type: not checked


@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_min_new_rows_must_be_a_positive_whole_number(value: Any) -> None:
    assert error(lambda: on_new_data("churn", min_new_rows=value)).field == "min_new_rows"


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * *", "0 0 * * * *", "@sometimes", "nope"])
def test_a_bad_cron_is_refused(cron: str) -> None:
    exc = error(lambda: schedule(cron))
    assert (exc.field, exc.rule) == ("cron", "cron")
    assert repr(cron) in exc.message


def test_two_rules_with_one_name_for_one_pipeline_are_refused() -> None:
    rules = {"train": [on_new_data("churn"), on_new_data("churn")]}
    exc = error(lambda: TriggerEngine(None, None, rules))  # type: ignore[arg-type]
    assert (exc.field, exc.rule) == ("triggers", "unique-name")


# ---------------------------------------------------------------------- names and display
def test_names_are_stable_and_differ_with_the_definition() -> None:
    assert on_new_data("churn", min_new_rows=5).name == on_new_data("churn", min_new_rows=5).name
    assert on_new_data("churn", min_new_rows=5).name != on_new_data("churn", min_new_rows=6).name
    assert on_new_data("churn").name.startswith("on:dataset.batch.ingested#")
    assert schedule("@daily").name != schedule("@hourly").name
    assert on_new_data("churn", name="fresh-data").name == "fresh-data"
    assert manual().name.startswith("manual")


def test_rules_serialise_to_plain_dicts() -> None:
    def compute(event: Event | None) -> dict[str, Any]:
        return {}

    rules = [
        on_new_data("churn", min_new_rows=5000, cooldown="10m", params=compute),
        schedule("*/5 * * * *", params={"full": True}),
        manual(),
    ]
    shown = [rule.to_dict() for rule in rules]
    orjson.dumps(shown)
    assert shown[0]["kind"] == "event"
    assert shown[0]["filters"] == {"dataset": "churn"}
    assert shown[0]["params"].endswith("compute>")
    assert shown[1] == {"name": rules[1].name, "kind": "schedule", "cron": "*/5 * * * *", "params": {"full": True}}  # fmt: skip
    assert shown[2]["kind"] == "manual"


def test_a_rule_is_a_frozen_value() -> None:
    rule = on_new_data("churn")
    assert isinstance(rule, EventRule)
    with pytest.raises(AttributeError):
        rule.pattern = "x.y"  # type: ignore[misc]


# ---------------------------------------------------------------------- cron due times
@pytest.mark.parametrize(
    ("cron", "now", "due"),
    [
        ("*/5 * * * *", at(10, 7), at(10, 5)),
        ("*/5 * * * *", at(10, 5), at(10, 5)),
        ("*/5 * * * *", at(10, 4, 59), at(10, 0)),
        ("@hourly", at(10, 59, 59), at(10, 0)),
        ("@daily", at(10, 0), at(0, 0)),
        ("30 2 * * *", at(2, 30), at(2, 30)),
    ],
)
def test_due_is_the_latest_slot_at_or_before_now(cron: str, now: datetime, due: datetime) -> None:
    assert schedule(cron).due(now) == due
