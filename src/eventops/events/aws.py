"""What every AWS integration shares: clients, one retry policy, and batched calls that retry
only the entries that failed.

Clients come from boto3's own chain for credentials (environment, profile, IRSA, instance role)
and for endpoints (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`, ...), so the same code talks
to AWS or to a stand-in such as moto's server by changing only the environment.

Why a retry loop of our own instead of botocore's: a batched call (`PutRecords`, `PutEvents`)
that partly fails answers 200 with a failure per entry, which botocore never retries, and a
throttled shard has to be backed off whichever way the throttle arrived. One policy covers
both, with full jitter (a random delay up to an exponentially growing cap, so clients throttled
together do not come back together), and every retry is counted where the caller can show it.
botocore's own retries are turned off (`max_attempts=1`) so that a throttle is never retried
twice over by two stacked policies.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from eventops.errors import BackendUnavailable, ConfigError

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E")

# Error codes that mean "slow down": retried with backoff whatever the call.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "LimitExceededException",  # Kinesis: too many GetShardIterator/ListShards calls
        "SlowDown",
        "KMSThrottlingException",
    }
)
# Faults on AWS's side that a later attempt usually does not meet.
TRANSIENT_CODES = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "KMSInternalException",
    }
)
REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


class AwsError(BackendUnavailable):
    """An AWS call failed for good (not retryable, or still failing after every attempt)."""

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None):
        super().__init__(message, field=field, rule=code or "aws")
        self.code = code


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt n waits uniform(0, min(cap, base * 2**n))."""

    attempts: int = 8
    base: float = 0.1
    cap: float = 10.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        ceiling = min(self.cap, self.base * (2**attempt))
        return (rng or random).uniform(0.0, ceiling)


DEFAULT_BACKOFF = Backoff()


@dataclass
class RetryStats:
    """Retries made so far by one integration (read by progress displays and metrics)."""

    calls: int = 0
    throttled: int = 0
    transient: int = 0
    entries_retried: int = 0
    entries_failed: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def count(self, code: str) -> None:
        self.codes[code] = self.codes.get(code, 0) + 1
        if code in THROTTLING_CODES:
            self.throttled += 1
        else:
            self.transient += 1


# ---------------------------------------------------------------------- clients
def region_from(explicit: str | None = None) -> str | None:
    """The region to use: the one given, else the standard variables (None: boto3 decides)."""
    if explicit:
        return explicit
    for name in REGION_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    return None


def client(service: str, *, region: str | None = None, timeout: float = 30.0) -> Any:
    """A boto3 client for `service` with botocore's retries off (this module retries)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ConfigError(
            "the AWS integrations need boto3: pip install 'eventops[aws]'",
            field="aws",
            rule="extra-installed",
        ) from exc
    config = Config(
        retries={"max_attempts": 1, "mode": "standard"},
        connect_timeout=min(timeout, 10.0),
        read_timeout=timeout,
        user_agent_extra="eventops",
    )
    return boto3.session.Session().client(service, region_name=region_from(region), config=config)


# ---------------------------------------------------------------------- errors
def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (None for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    return None


def retry_code(exc: BaseException) -> str | None:
    """Why `exc` is worth another attempt (its code), or None if it is not."""
    code = error_code(exc)
    if code is not None:
        if code in THROTTLING_CODES or code in TRANSIENT_CODES:
            return code
        status = _status(exc)
        if status == 429:
            return "ThrottlingException"
        if status is not None and status >= 500:
            return code
        return None
    try:
        from botocore.exceptions import (
            ConnectionClosedError,
            EndpointConnectionError,
            ReadTimeoutError,
        )
    except ImportError:  # pragma: no cover
        return None
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return type(exc).__name__
    return None


# ---------------------------------------------------------------------- calls
def call(
    fn: Callable[..., T],
    /,
    *args: Any,
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    stats: RetryStats | None = None,
    sleep: Callable[[float], None] = time.sleep,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)`, retried with backoff while AWS throttles or fails transiently.

    A failure that is not retryable, or the last attempt's, raises `AwsError` naming `what`
    and the AWS error code.
    """
    for attempt in range(backoff.attempts):
        try:
            if stats is not None:
                stats.calls += 1
            return fn(*args, **kwargs)
        except Exception as exc:
            code = retry_code(exc)
            if code is None:
                raise AwsError(f"{what} failed: {exc}", code=error_code(exc)) from exc
            if stats is not None:
                stats.count(code)
            if attempt == backoff.attempts - 1:
                raise AwsError(
                    f"{what} still failing after {backoff.attempts} attempts: {exc}", code=code
                ) from exc
            delay = backoff.delay(attempt)
            log.info("%s: %s, retrying in %.2fs (attempt %d)", what, code, delay, attempt + 1)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass
class BatchOutcome:
    """What became of a batched put: how many entries went through, and which did not."""

    sent: int = 0
    failed: list[tuple[int, str, str]] = field(default_factory=list)  # (index, code, message)


def put_in_batches(
    entries: Sequence[E],
    *,
    size: int,
    send: Callable[[list[E]], list[tuple[str, str] | None]],
    what: str,
    backoff: Backoff = DEFAULT_BACKOFF,
    stats: RetryStats | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> BatchOutcome:
    """Send `entries` `size` at a time; retry only the entries that failed, if retryable.

    `send` makes one call and returns, for each entry it was given and in the same order, None
    if it was accepted or (code, message) if not. Whole-call throttles are retried by `call`.
    Entries that fail with a code that is not retryable, or still fail after every attempt,
    are returned in `failed` with their index into `entries`, for the caller to dead-letter:
    nothing is dropped without a trace.
    """
    if size < 1:
        raise ValueError("size must be at least 1")
    outcome = BatchOutcome()
    for start in range(0, len(entries), size):
        pending = list(range(start, min(start + size, len(entries))))
        for attempt in range(backoff.attempts):
            results = call(
                send, [entries[i] for i in pending], what=what, backoff=backoff, stats=stats,
                sleep=sleep,
            )  # fmt: skip
            if len(results) != len(pending):
                raise AwsError(
                    f"{what}: {len(results)} results for {len(pending)} entries", code="Mismatch"
                )
            retry: list[int] = []
            throttled = False
            for index, result in zip(pending, results, strict=True):
                if result is None:
                    outcome.sent += 1
                    continue
                code, message = result
                if code in THROTTLING_CODES or code in TRANSIENT_CODES:
                    retry.append(index)
                    throttled = True
                    if stats is not None:
                        stats.count(code)
                else:
                    outcome.failed.append((index, code, message))
            if not retry:
                break
            if attempt == backoff.attempts - 1:
                for index in retry:
                    outcome.failed.append((index, "RetriesExhausted", f"{what}: still throttled"))
                break
            if stats is not None:
                stats.entries_retried += len(retry)
            pending = retry
            if throttled:
                delay = backoff.delay(attempt)
                log.info("%s: %d entries failed, retrying them in %.2fs", what, len(retry), delay)
                sleep(delay)
    if stats is not None:
        stats.entries_failed += len(outcome.failed)
    outcome.failed.sort()
    return outcome


# ---------------------------------------------------------------------- URLs
@dataclass(frozen=True)
class AwsUrl:
    """`scheme://name?region=...&key=value`: a stream, bus or queue and its options."""

    scheme: str
    name: str
    region: str | None
    options: dict[str, str]


def parse_aws_url(url: str, scheme: str, *, field: str, allowed: Sequence[str] = ()) -> AwsUrl:
    """Parse `scheme://name?region=r&opt=v`; unknown options are refused, naming them."""
    parts = urlsplit(url)
    if parts.scheme != scheme:
        raise ConfigError(
            f"{url!r} is not a {scheme}:// URL (expected {scheme}://NAME?region=REGION)",
            field=field,
            rule="url-scheme",
        )
    name = unquote(parts.netloc + parts.path).strip("/")
    if not name:
        raise ConfigError(f"{url!r} names no {scheme} resource", field=field, rule="url-name")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    region = options.pop("region", None) or None
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        known = ", ".join(["region", *allowed])
        raise ConfigError(
            f"unknown option {unknown[0]!r} in {url!r}; known: {known}",
            field=field,
            rule="known-option",
        )
    return AwsUrl(scheme, name, region, options)


__all__ = [
    "DEFAULT_BACKOFF",
    "THROTTLING_CODES",
    "TRANSIENT_CODES",
    "AwsError",
    "AwsUrl",
    "Backoff",
    "BatchOutcome",
    "RetryStats",
    "call",
    "client",
    "error_code",
    "parse_aws_url",
    "put_in_batches",
    "region_from",
    "retry_code",
]
