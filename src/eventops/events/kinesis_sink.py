"""The platform's events put on a Kinesis data stream, for teams whose consumers read Kinesis.

Each event is one record: `Data` the event as CloudEvents JSON, `PartitionKey` its subject (its
type when it has none), so the events about one subject stay in order on one shard, as on the
bus. `PutRecords` takes at most 500 records and 5 MiB per call and answers 200 even when some
records failed (``ProvisionedThroughputExceededException`` on a hot shard); only those are sent
again, with backoff. A record over 1 MiB is never sent: it is returned as failed
(``RecordTooLarge``) and dead-lettered by the forwarder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventops.events import aws
from eventops.events.envelope import Event

MAX_RECORDS = 500
MAX_CALL_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024


class KinesisSink:
    """Puts events on a Kinesis stream (name or ARN)."""

    def __init__(
        self,
        stream: str,
        *,
        types: list[str],
        region: str | None = None,
        client: Any = None,
        backoff: aws.Backoff = aws.DEFAULT_BACKOFF,
    ) -> None:
        self.stream, self.types, self.backoff = stream, list(types), backoff
        self.name = f"kinesis:{stream}"
        self.client = client if client is not None else aws.client("kinesis", region=region)
        self.retries = aws.RetryStats()
        self._target = (
            {"StreamARN": stream} if stream.startswith("arn:") else {"StreamName": stream}
        )

    @staticmethod
    def record(event: Event) -> dict[str, Any]:
        key = (event.subject or event.type)[:256]  # Kinesis keys are 1..256 characters
        return {"Data": event.to_json().encode(), "PartitionKey": key}

    def send(self, events: Sequence[Event]) -> list[tuple[int, str, str]]:
        records = [self.record(e) for e in events]
        failed: list[tuple[int, str, str]] = []
        groups: list[list[int]] = [[]]
        size = 0
        for index, record in enumerate(records):
            length = len(record["Data"]) + len(record["PartitionKey"].encode())
            if length > MAX_RECORD_BYTES:
                failed.append((index, "RecordTooLarge", f"record is {length:,} bytes; 1 MiB max"))
                continue
            if len(groups[-1]) == MAX_RECORDS or size + length > MAX_CALL_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(index)
            size += length
        for group in groups:
            if not group:
                continue
            # One group is within both call limits, so put_in_batches sends it in one call.
            outcome = aws.put_in_batches(
                [records[i] for i in group], size=MAX_RECORDS, send=self._put,
                what=f"kinesis put_records on {self.stream}", backoff=self.backoff,
                stats=self.retries,
            )  # fmt: skip
            failed.extend((group[i], code, message) for i, code, message in outcome.failed)
        return sorted(failed)

    def _put(self, records: list[dict[str, Any]]) -> list[tuple[str, str] | None]:
        answer = self.client.put_records(Records=records, **self._target)
        results: list[tuple[str, str] | None] = []
        for item in answer.get("Records", []):
            code = item.get("ErrorCode")
            results.append((str(code), str(item.get("ErrorMessage", ""))) if code else None)
        return results


__all__ = ["MAX_RECORDS", "KinesisSink"]
