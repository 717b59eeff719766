from __future__ import annotations

import pytest

from eventops.errors import ValidationError
from eventops.events.catalog import CATALOG, validate_event
from eventops.events.envelope import Event


def test_a_catalogued_event_with_valid_data_passes() -> None:
    event = Event(
        type="dataset.batch.ingested",
        data={
            "dataset": "churn",
            "batch_id": "b1",
            "rows": 10,
            "schema_version": 1,
            "uri": "file:///x",
        },
    )
    assert validate_event(event) is event


def test_missing_data_field_is_named() -> None:
    event = Event(type="pipeline.run.failed", data={"pipeline": "train", "run_id": "r1"})
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    assert info.value.field == "data.error"
    assert info.value.rule == "missing"


def test_wrong_data_type_is_named() -> None:
    event = Event(
        type="dataset.batch.ingested",
        data={"dataset": "churn", "batch_id": "b1", "rows": -1, "schema_version": 1, "uri": "u"},
    )
    with pytest.raises(ValidationError) as info:
        validate_event(event)
    assert info.value.field == "data.rows"


def test_unknown_type_in_a_reserved_namespace_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        validate_event(Event(type="model.version.exploded", data={}))
    assert info.value.field == "type" and info.value.rule == "catalog"


def test_users_own_namespaces_are_free() -> None:
    event = Event(type="shop.order.placed", data={"anything": True})
    assert validate_event(event) is event


def test_audit_events_share_one_schema() -> None:
    validate_event(Event(type="audit.token.created", data={"actor": "a", "action": "create"}))
    with pytest.raises(ValidationError):
        validate_event(Event(type="audit.token.created", data={"action": "create"}))


def test_every_catalogued_type_is_past_tense_noun_verb() -> None:
    for name in CATALOG:
        verb = name.split(".")[-1]
        assert verb.endswith("ed") or verb in {"rolled_back"}, name
