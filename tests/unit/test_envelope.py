"""The envelope: CloudEvents 1.0 in both modes, checked against the official SDK both ways."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from cloudevents.v1 import kafka as ce_kafka
from cloudevents.v1.conversion import to_json as sdk_to_json
from cloudevents.v1.http import CloudEvent
from cloudevents.v1.http import from_json as sdk_from_json

from eventops.errors import ValidationError
from eventops.events.envelope import Event


def sample() -> Event:
    return Event(
        type="dataset.batch.ingested",
        source="/eventops/ingest",
        subject="churn",
        data={"dataset": "churn", "rows": 12, "nested": {"a": [1, 2.5, None]}},
        correlationid="corr-1",
        causationid="cause-1",
        extensions={"tenant": "acme"},
    )


def test_structured_json_round_trip() -> None:
    event = sample()
    assert Event.from_json(event.to_json()) == event


def test_the_sdk_reads_our_structured_json() -> None:
    event = sample()
    theirs = sdk_from_json(event.to_json())
    assert theirs["id"] == event.id
    assert theirs["type"] == event.type
    assert theirs["subject"] == "churn"
    assert theirs["correlationid"] == "corr-1"
    assert theirs["causationid"] == "cause-1"
    assert theirs["tenant"] == "acme"
    assert theirs.get_data() == event.data


def test_we_read_the_sdks_structured_json() -> None:
    theirs = CloudEvent(
        {
            "type": "model.version.promoted",
            "source": "/elsewhere",
            "subject": "churn-model",
            "correlationid": "c-9",
            "datacontenttype": "application/json",
        },
        {"model": "churn", "version": "3"},
    )
    ours = Event.from_json(sdk_to_json(theirs))
    assert ours.id == theirs["id"]
    assert ours.source == "/elsewhere"
    assert ours.correlationid == "c-9"
    assert ours.data == {"model": "churn", "version": "3"}
    assert ours.time.tzinfo is not None


def test_kafka_binary_mode_headers_key_and_value() -> None:
    event = sample()
    key, value, headers = event.to_kafka()
    names = dict(headers)
    assert key == b"churn"
    assert json.loads(value) == event.data
    assert names["ce_type"] == b"dataset.batch.ingested"
    assert names["ce_correlationid"] == b"corr-1"
    assert names["content-type"] == b"application/json"
    assert Event.from_kafka(key, value, headers) == event


def test_the_sdk_reads_our_kafka_binary_mode() -> None:
    key, value, headers = sample().to_kafka()
    theirs = ce_kafka.from_binary(
        ce_kafka.KafkaMessage(headers=dict(headers), key=key, value=value),
        data_unmarshaller=json.loads,
    )
    assert theirs["type"] == "dataset.batch.ingested"
    assert theirs["causationid"] == "cause-1"
    assert theirs["subject"] == "churn"
    assert theirs.get_data()["rows"] == 12


def test_we_read_the_sdks_kafka_binary_mode() -> None:
    theirs = CloudEvent(
        {
            "type": "feedback.received",
            "source": "/app",
            "subject": "p-1",
            "causationid": "x",
            "datacontenttype": "application/json",
        },
        {"prediction_id": "p-1", "label": 1},
    )
    message = ce_kafka.to_binary(
        theirs, data_marshaller=lambda d: json.dumps(d).encode(), key_mapper=lambda e: e["subject"]
    )
    ours = Event.from_kafka(message.key, message.value, list(message.headers.items()))
    assert ours.id == theirs["id"]
    assert ours.subject == "p-1"
    assert ours.causationid == "x"
    assert ours.data == {"prediction_id": "p-1", "label": 1}


def test_caused_events_carry_the_correlation_chain() -> None:
    root = Event(type="dataset.batch.ingested", subject="churn")
    child = root.caused("pipeline.run.requested", data={"pipeline": "train"})
    grandchild = child.caused("pipeline.run.started")
    assert child.correlationid == root.id and child.causationid == root.id
    assert grandchild.correlationid == root.id and grandchild.causationid == child.id
    assert grandchild.subject == "churn"


@pytest.mark.parametrize(
    ("attrs", "field"),
    [
        ({"type": "Dataset Ingested"}, "type"),
        ({"type": "dataset"}, "type"),
        ({"type": "a.b", "specversion": "0.3"}, "specversion"),
        ({"type": "a.b", "time": datetime(2026, 1, 1)}, "time"),  # naive: no timezone
        ({"type": "a.b", "datacontenttype": "text/csv"}, "datacontenttype"),
        ({"type": "a.b", "extensions": {"Bad-Name": 1}}, "extensions"),
    ],
)
def test_invalid_attributes_are_refused_naming_the_field(attrs: dict, field: str) -> None:
    from eventops.events.envelope import build_event

    with pytest.raises(ValidationError) as info:
        build_event(attrs)
    assert info.value.field is not None and info.value.field.startswith(field)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "event"),
        ("[1, 2]", "event"),
        ('{"specversion": "1.0", "id": "1", "type": "a.b"}', "source"),
        ('{"specversion": "1.0", "id": "1", "source": "/x"}', "type"),
        (
            '{"specversion": "1.0", "id": "1", "source": "/x", "type": "a.b", "data_base64": "AA=="}',
            "data_base64",
        ),
    ],
)
def test_malformed_json_events_are_refused_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Event.from_json(text)
    assert info.value.field == field


def test_binary_mode_without_ce_headers_is_refused() -> None:
    with pytest.raises(ValidationError) as info:
        Event.from_kafka(b"k", b"{}", [("content-type", b"application/json")])
    assert info.value.field == "ce_specversion"


def test_time_is_normalised_to_utc() -> None:
    event = Event.from_json(
        '{"specversion":"1.0","id":"1","source":"/x","type":"a.b","time":"2026-03-01T12:00:00+02:00"}'
    )
    assert event.time == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert '"time":"2026-03-01T10:00:00Z"' in event.to_json()
