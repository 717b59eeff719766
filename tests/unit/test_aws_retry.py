"""The one retry policy of the AWS integrations: whole calls, failed entries, URLs."""

from __future__ import annotations

import random
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from eventops.errors import ConfigError
from eventops.events import aws

FAST = aws.Backoff(attempts=4, base=0.5, cap=2.0)


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "Op",
    )


def test_full_jitter_stays_under_the_growing_cap() -> None:
    rng = random.Random(7)
    delays = [[aws.Backoff(base=0.1, cap=1.0).delay(n, rng) for _ in range(200)] for n in range(6)]
    for attempt, found in enumerate(delays):
        assert max(found) <= min(1.0, 0.1 * 2**attempt)
        assert min(found) >= 0
    assert max(delays[3]) > max(delays[0])  # it grows...
    assert len(set(delays[5])) > 150  # ...and is spread, not a fixed step


def test_throttling_is_retried_then_succeeds() -> None:
    slept: list[float] = []
    answers: list[Any] = [client_error("ThrottlingException"), client_error("InternalFailure", 500)]

    def flaky() -> str:
        if answers:
            raise answers.pop(0)
        return "ok"

    stats = aws.RetryStats()
    assert aws.call(flaky, what="op", backoff=FAST, stats=stats, sleep=slept.append) == "ok"
    assert len(slept) == 2
    assert (stats.throttled, stats.transient, stats.calls) == (1, 1, 3)


def test_a_connection_error_is_retried() -> None:
    answers: list[Any] = [EndpointConnectionError(endpoint_url="http://x")]

    def flaky() -> str:
        if answers:
            raise answers.pop(0)
        return "ok"

    assert aws.call(flaky, what="op", backoff=FAST, sleep=lambda _: None) == "ok"


def test_an_error_that_is_not_transient_fails_at_once_with_its_code() -> None:
    calls = []

    def denied() -> None:
        calls.append(1)
        raise client_error("AccessDeniedException")

    with pytest.raises(aws.AwsError) as info:
        aws.call(denied, what="put", backoff=FAST, sleep=lambda _: None)
    assert len(calls) == 1
    assert info.value.rule == "AccessDeniedException"
    assert "put failed" in str(info.value)


def test_throttling_that_never_ends_gives_up_after_every_attempt() -> None:
    slept: list[float] = []

    def throttled() -> None:
        raise client_error("ProvisionedThroughputExceededException")

    with pytest.raises(aws.AwsError) as info:
        aws.call(throttled, what="get", backoff=FAST, sleep=slept.append)
    assert len(slept) == FAST.attempts - 1
    assert info.value.code == "ProvisionedThroughputExceededException"


def test_only_the_failed_entries_are_sent_again() -> None:
    sent: list[list[int]] = []
    fail_once = {2, 5}

    def send(entries: list[int]) -> list[tuple[str, str] | None]:
        sent.append(list(entries))
        out: list[tuple[str, str] | None] = []
        for entry in entries:
            if entry in fail_once:
                fail_once.discard(entry)
                out.append(("ThrottlingException", "slow down"))
            else:
                out.append(None)
        return out

    stats = aws.RetryStats()
    outcome = aws.put_in_batches(
        list(range(8)), size=4, send=send, what="put", backoff=FAST, stats=stats,
        sleep=lambda _: None,
    )  # fmt: skip
    assert sent == [[0, 1, 2, 3], [2], [4, 5, 6, 7], [5]]
    assert (outcome.sent, outcome.failed) == (8, [])
    assert stats.entries_retried == 2


def test_entries_failing_for_good_are_returned_with_their_index_and_code() -> None:
    def send(entries: list[int]) -> list[tuple[str, str] | None]:
        return [("ValidationException", "bad") if e == 1 else None for e in entries]

    outcome = aws.put_in_batches([0, 1, 2], size=10, send=send, what="put", sleep=lambda _: None)
    assert outcome.sent == 2
    assert outcome.failed == [(1, "ValidationException", "bad")]


def test_entries_throttled_past_every_attempt_are_failed_not_lost() -> None:
    def send(entries: list[int]) -> list[tuple[str, str] | None]:
        return [("ThrottlingException", "x") for _ in entries]

    outcome = aws.put_in_batches([0, 1], size=10, send=send, what="put", backoff=FAST,
                                 sleep=lambda _: None)  # fmt: skip
    assert [(i, code) for i, code, _ in outcome.failed] == [
        (0, "RetriesExhausted"),
        (1, "RetriesExhausted"),
    ]


def test_a_result_count_that_does_not_match_is_an_error() -> None:
    with pytest.raises(aws.AwsError, match="2 results for 1 entries"):
        aws.put_in_batches([0], size=10, send=lambda e: [None, None], what="put")


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("kinesis://s?region=eu-west-1&colour=red", "known-option"),
        ("sqs://s", "url-scheme"),
        ("kinesis://", "url-name"),
    ],
)
def test_urls_are_checked(url: str, rule: str) -> None:
    with pytest.raises(ConfigError) as info:
        aws.parse_aws_url(url, "kinesis", field="--to")
    assert (info.value.field, info.value.rule) == ("--to", rule)


def test_a_url_names_its_resource_region_and_options() -> None:
    parsed = aws.parse_aws_url("kinesis://orders?region=eu-west-1&start=latest", "kinesis",
                               field="x", allowed=("start",))  # fmt: skip
    assert (parsed.name, parsed.region, parsed.options) == (
        "orders",
        "eu-west-1",
        {"start": "latest"},
    )


def test_the_region_comes_from_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-south-1")
    assert aws.region_from(None) == "ap-south-1"
    assert aws.region_from("eu-west-1") == "eu-west-1"
