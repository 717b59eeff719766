"""Alert rules: which events fire an alert, how repeats are deduplicated, what resolves it.

Declared in a project:

    alerts = [AlertRule(name="drift", on=["monitor.drift.detected"], where={"monitor": "churn"},
                        severity="warning", channels=[Slack(webhook_url_env="SLACK_WEBHOOK_URL")],
                        cooldown="10m", group_by="monitor", resolve_on=["monitor.check.completed"])]

An alert is one (rule, group) pair; the group is the event data's `group_by` field (default:
the event's subject). `AlertService` keeps each alert's state in `alert_states`:

* a match while not firing fires it: the state row, the `alert.fired` event (outbox) and the
  processed-event mark commit in one transaction; the notification is delivered after commit;
* a match while firing is counted; inside the cooldown (since the last notification) it is
  deduplicated, after it the alert re-notifies once ("still firing") and a new cooldown starts;
* a `resolve_on` event for the group whose data says the condition cleared resolves it and
  notifies (`alert.resolved`).

Delivery is at-least-once: notifications wait in the row (`delivery_pending`) until every
channel confirmed them, so a crash after commit or a receiver that is down means a later
delivery (`retry_pending`), possibly twice; messages carry a stable `id` for receivers to
deduplicate. See docs/alerts.md.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import string
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_core import PydanticCustomError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from eventops.errors import ConfigError, EventOpsError, ValidationError
from eventops.events.bus import Bus, type_matches
from eventops.events.catalog import CATALOG, RESERVED_NAMESPACES, schema_for
from eventops.events.envelope import TYPE_PATTERN, Event, format_time
from eventops.events.subscription import Subscription
from eventops.monitoring.channels import AlertMessage, Channel, Log, Poster, deliver
from eventops.quantities import parse_duration
from eventops.store.alerts import FIRING, GROUP_LENGTH, RESOLVED, AlertStateRow
from eventops.store.database import Store
from eventops.store.idempotency import idempotent
from eventops.store.outbox import add_event

log = logging.getLogger(__name__)

SOURCE = "/eventops/alerts"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
CHECK_COMPLETED = "monitor.check.completed"
# Which `monitor.check.completed` field says a watched condition cleared.
CLEARED_FIELDS = {"monitor.drift.detected": "drifted", "monitor.performance.degraded": "degraded"}
MAX_PENDING = 50
Action = Literal["fired", "deduplicated", "renotified", "resolved"]


class AlertRule(BaseModel):
    """Which events fire an alert, where it is sent, and what resolves it (module docstring).

    A mistake is an `eventops.errors.ValidationError` naming ``alerts.<name>.<field>``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, - and _")
    on: tuple[str, ...] = Field(min_length=1, description="event types or globs that fire it")
    where: dict[str, Any] = Field(default_factory=dict, description="equality on event data")
    severity: Literal["info", "warning", "critical"] = "warning"
    channels: tuple[Channel, ...] = Field(default=(Log(),), min_length=1)
    cooldown: str | float = Field("10m", description="between notifications while firing")
    group_by: str | None = Field(
        None, min_length=1, description="event data field; default subject"
    )
    resolve_on: tuple[str, ...] = ()
    summary: str | None = Field(None, description="template over the event data: '{monitor}'")

    def __init__(self, /, **data: Any) -> None:
        who = str(data["name"]) if isinstance(data.get("name"), str) else "?"
        try:
            super().__init__(**data)
        except PydanticValidationError as exc:
            raise _rule_error(exc, who) from None
        except ValidationError as exc:  # from a channel given as a mapping
            field = f"alerts.{who}.channels.{exc.field}"
            raise type(exc)(exc.message, field=field, rule=exc.rule) from None

    @field_validator("on", "resolve_on")
    @classmethod
    def _patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            _check_pattern(pattern)
        return value

    @field_validator("cooldown")
    @classmethod
    def _cooldown(cls, value: str | float) -> str | float:
        try:
            parse_duration(value, field="cooldown")
        except ConfigError as exc:
            raise PydanticCustomError("duration", exc.message) from None
        return value

    @property
    def cooldown_seconds(self) -> float:
        return parse_duration(self.cooldown, field=f"alerts.{self.name}.cooldown")

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys((*self.on, *self.resolve_on)))

    def channel_ids(self) -> list[str]:
        """Stable names of the channels in this rule (``0-slack``), as the state refers to them."""
        return [f"{i}-{channel.kind}" for i, channel in enumerate(self.channels)]

    def definition(self) -> dict[str, Any]:
        """The JSON description `eventops apply` records: env variable names, never secrets."""
        return self.model_dump(mode="json")

    # ------------------------------------------------------------------ matching
    def _data(self, event: Event) -> Mapping[str, Any]:
        return event.data if isinstance(event.data, Mapping) else {}

    def matches(self, event: Event) -> bool:
        """An event that fires (or keeps firing) this rule."""
        data = self._data(event)
        return type_matches(event.type, self.on) and all(
            key in data and data[key] == value for key, value in self.where.items()
        )

    def may_resolve(self, event: Event) -> bool:
        """A `resolve_on` event; `where` applies to the keys it carries (a check event need not
        repeat a performance rule's metric)."""
        if not self.resolve_on or not type_matches(event.type, self.resolve_on):
            return False
        data = self._data(event)
        return not any(key in data and data[key] != value for key, value in self.where.items())

    def resolves(self, event: Event, conditions: Iterable[str] = ()) -> bool:
        """A `resolve_on` event saying the condition cleared. For `monitor.check.completed`
        that is each of `conditions` (the fields of what fired the alert; default: what `on`
        watches) present and False: a missing field, or a failed check, is not a clean check."""
        if not self.may_resolve(event):
            return False
        if event.type != CHECK_COMPLETED:
            return True
        data = self._data(event)
        if data.get("error") or data.get("status", "ok") != "ok":
            return False  # a check that failed says nothing about the condition
        needed = set(conditions) or {
            f for t, f in CLEARED_FIELDS.items() if type_matches(t, self.on)
        }
        if not needed:  # a rule on other types: whichever condition the check reports
            needed = {f for f in CLEARED_FIELDS.values() if f in data}
        return bool(needed) and all(data.get(f) is False for f in needed)

    def group_of(self, event: Event) -> str:
        value = self._data(event).get(self.group_by) if self.group_by else None
        group = str(value) if value is not None else (event.subject or "-")
        return group[:GROUP_LENGTH]

    def summary_for(self, event: Event, group: str) -> str:
        data = self._data(event)
        if self.summary:
            values = {**data, "rule": self.name, "group": group, "type": event.type}
            try:
                return string.Formatter().vformat(self.summary, (), _Defaulting(values))
            except (ValueError, TypeError, IndexError, AttributeError):
                return self.summary
        if isinstance(data.get("summary"), str) and data["summary"]:
            return str(data["summary"])
        who = data.get("monitor") or data.get("deployment") or group
        if event.type == "monitor.drift.detected":
            columns = data.get("drifted_columns")
            if isinstance(columns, list) and columns:
                names = ", ".join(str(c) for c in columns[:5]) + (
                    ", ..." if len(columns) > 5 else ""
                )
                return f"{who}: drift in {len(columns)} column(s): {names}"
            return f"{who}: drift detected"
        if event.type == "monitor.performance.degraded" and data.get("metric") is not None:
            return f"{who}: {data['metric']} degraded to {data.get('value', '?')}"
        return f"{who}: {event.type}"


class _Defaulting(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _check_pattern(pattern: str) -> None:
    glob = any(ch in pattern for ch in "*?[")
    if not glob and not TYPE_PATTERN.match(pattern):
        raise PydanticCustomError(
            "type", f"{pattern!r} is not an event type like 'monitor.drift.detected'"
        )
    head = pattern.split(".")[0]
    if fnmatch.fnmatchcase("alert.fired", pattern) or fnmatch.fnmatchcase(
        "alert.resolved", pattern
    ):
        raise PydanticCustomError(
            "no-alert-loop", f"{pattern!r} matches alert events: an alert cannot fire on alerts"
        )
    known = [t for t in CATALOG if fnmatch.fnmatchcase(t, pattern)]
    if head in RESERVED_NAMESPACES and not known and schema_for(pattern) is None and not glob:
        raise PydanticCustomError(
            "catalog", f"{pattern!r} is not a catalogued type (see `eventops events types`)"
        )


def _rule_error(exc: PydanticValidationError, who: str) -> ValidationError:
    err = exc.errors()[0]
    parts: list[str] = []
    for part in err["loc"]:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif part not in ("slack", "webhook", "log"):  # the union's tag adds nothing
            parts.append(f".{part}")
    field = f"alerts.{who}{''.join(parts)}"
    message = err["msg"].removeprefix("Value error, ")
    rule = "known-field" if err["type"] == "extra_forbidden" else err["type"]
    return ValidationError(message, field=field, rule=rule)


# ---------------------------------------------------------------------- the service
@dataclass(frozen=True)
class Outcome:
    """What one event did to one alert."""

    rule: str
    group: str
    action: Action


class AlertService:
    """Applies `rules` to events, keeps alert state in `store`, and delivers notifications.

    Wire it as: ``service.subscription(bus, group).start()`` for the events, and a thread
    running ``service.run_retries(stop)`` for deliveries that failed or were cut off.
    `environ` (default `os.environ`) is where `*_env` secrets are read; every rule's secrets
    are checked here, so a missing one stops the start with a ConfigError naming it.
    """

    def __init__(
        self,
        store: Store,
        rules: Iterable[AlertRule],
        *,
        clock: Callable[[], float] = time.time,
        consumer: str = "alerts",
        environ: Mapping[str, str] | None = None,
        poster: Poster | None = None,
        max_delivery_rounds: int = 12,
        retry_backoff: float = 30.0,
        max_retry_backoff: float = 3600.0,
        delivery_lease: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.rules: dict[str, AlertRule] = {}
        for rule in rules:
            if rule.name in self.rules:
                raise ValidationError(
                    "two alert rules have this name", field=f"alerts.{rule.name}", rule="unique"
                )
            self.rules[rule.name] = rule
        self.clock = clock
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.poster = poster or Poster()
        self.max_delivery_rounds = max_delivery_rounds
        self.retry_backoff, self.max_retry_backoff = retry_backoff, max_retry_backoff
        self.delivery_lease = delivery_lease
        self.sleep = sleep
        self.check_secrets()
        self._apply_once = idempotent(store, consumer, self._apply)

    def check_secrets(self) -> None:
        for rule in self.rules.values():
            for index, channel in enumerate(rule.channels):
                try:
                    channel.check(self.environ)
                except ConfigError as exc:
                    field = f"alerts.{rule.name}.channels[{index}].{exc.field}"
                    raise ConfigError(exc.message, field=field, rule=exc.rule) from None

    @property
    def types(self) -> list[str]:
        return list(dict.fromkeys(t for rule in self.rules.values() for t in rule.types))

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # ------------------------------------------------------------------ events
    def handle(self, event: Event) -> list[Outcome]:
        """Apply `event` to every rule (once per event id), then deliver what it queued."""
        if not any(type_matches(event.type, r.types) for r in self.rules.values()):
            return []
        outcomes = self._apply_once(event) or []
        for key in dict.fromkeys((o.rule, o.group) for o in outcomes if o.action != "deduplicated"):
            self.deliver(*key)
        return outcomes

    def subscription(
        self, bus: Bus, group: str = "eventops-alerts", **options: Any
    ) -> Subscription:
        """A `Subscription` feeding `handle` (call `.start()`). A new group starts at the latest
        event (`options` may say otherwise): replaying a week of history would page people for
        conditions long gone. A group with committed offsets resumes from them."""
        options.setdefault("start", "latest")
        return Subscription(bus, group, self.handle, types=self.types, **options)

    def _apply(self, event: Event, session: Session) -> list[Outcome]:
        outcomes = []
        for rule in self.rules.values():
            resolved = self._resolve(session, rule, event) if rule.may_resolve(event) else None
            if resolved is not None:
                outcomes.append(resolved)
            elif rule.matches(event):
                outcomes.append(self._fire(session, rule, event))
        return outcomes

    def _fire(self, session: Session, rule: AlertRule, event: Event) -> Outcome:
        group, now = rule.group_of(event), self.now()
        row = session.get(AlertStateRow, (rule.name, group), with_for_update=True)
        summary = rule.summary_for(event, group)
        condition = [CLEARED_FIELDS[event.type]] if event.type in CLEARED_FIELDS else []
        if row is not None and row.status == FIRING:
            row.conditions = sorted({*row.conditions, *condition})
            row.count += 1
            row.last_event_id, row.updated_at = event.id, now
            last = row.last_notified_at or row.since
            if now - last < timedelta(seconds=rule.cooldown_seconds):
                row.deduplicated += 1
                return Outcome(rule.name, group, "deduplicated")
            row.notifications += 1
            row.last_notified_at, row.summary = now, summary
            self._queue(row, rule, FIRING, event, now)
            return Outcome(rule.name, group, "renotified")
        if row is None:  # a concurrent insert of the same key fails the commit; the retry dedups
            row = AlertStateRow(rule=rule.name, group_key=group, pending=[], delivery_attempts=0)
            session.add(row)
        row.status, row.severity, row.summary, row.since = FIRING, rule.severity, summary, now
        row.count, row.deduplicated, row.notifications = 1, 0, 1
        row.conditions = condition
        row.last_notified_at, row.cause_event_id, row.last_event_id = now, event.id, event.id
        row.updated_at = now
        self._queue(row, rule, FIRING, event, now)
        data = {"rule": rule.name, "severity": rule.severity, "summary": summary, "group": group,
                "cause_event_id": event.id, "cause_type": event.type}  # fmt: skip
        add_event(session, event.caused("alert.fired", data=data, subject=rule.name, source=SOURCE))
        log.info("alert %s fired for %s (event %s)", rule.name, group, event.id)
        return Outcome(rule.name, group, "fired")

    def _resolve(self, session: Session, rule: AlertRule, event: Event) -> Outcome | None:
        group, now = rule.group_of(event), self.now()
        row = session.get(AlertStateRow, (rule.name, group), with_for_update=True)
        if row is None or row.status != FIRING or not rule.resolves(event, row.conditions):
            return None
        fired_at, count = row.since, row.count
        summary = f"resolved after {_duration(now - fired_at)} ({count} event(s)): {row.summary}"
        row.status, row.since, row.summary, row.updated_at = RESOLVED, now, summary, now
        row.last_event_id = event.id
        self._queue(row, rule, RESOLVED, event, now)
        data = {"rule": rule.name, "severity": rule.severity, "summary": summary, "group": group,
                "cause_event_id": event.id, "fired_at": format_time(fired_at), "count": count}  # fmt: skip
        add_event(
            session, event.caused("alert.resolved", data=data, subject=rule.name, source=SOURCE)
        )
        log.info("alert %s resolved for %s (event %s)", rule.name, group, event.id)
        return Outcome(rule.name, group, "resolved")

    def _queue(
        self, row: AlertStateRow, rule: AlertRule, status: str, event: Event, now: datetime
    ) -> None:
        key = f"{rule.name}\0{row.group_key}\0{event.id}\0{status}\0{row.notifications}"
        message = AlertMessage(
            id=hashlib.sha256(key.encode()).hexdigest()[:32],
            rule=rule.name,
            severity=rule.severity,
            status="firing" if status == FIRING else "resolved",
            summary=row.summary,
            group=row.group_key,
            since=format_time(row.since),
            count=row.count,
            notification=row.notifications,
            event=event.to_dict(),
        )
        entry = {"id": message.id, "message": message.to_json(), "channels": rule.channel_ids()}
        if dropped := row.enqueue(entry, MAX_PENDING):
            log.error("alert %s/%s: too many undelivered notifications; dropped the oldest %d",
                      rule.name, row.group_key, dropped)  # fmt: skip
        # Ours to deliver right after commit; the retry loop takes over if we never report back.
        row.next_delivery_at = now + timedelta(seconds=self.delivery_lease)

    # ------------------------------------------------------------------ delivery
    def deliver(self, rule_name: str, group: str, *, due_only: bool = False) -> int:
        """Deliver the alert's pending notifications; returns how many reached every channel.

        Each channel gets them in order; a channel that fails is not sent later ones this round
        (a "resolved" must not overtake its "firing"). Failures are recorded on the row, logged,
        and retried with backoff by `retry_pending` until `max_delivery_rounds`, then given up
        with the error kept on the row and logged as an error.
        """
        rule = self.rules.get(rule_name)
        with self.store.session() as session:
            row = session.get(AlertStateRow, (rule_name, group), with_for_update=True)
            if row is None or not row.delivery_pending or rule is None:
                return 0
            now = self.now()
            if due_only and row.next_delivery_at is not None and row.next_delivery_at > now:
                return 0
            row.next_delivery_at = now + timedelta(seconds=self.delivery_lease)
            pending = [dict(entry) for entry in row.pending]
        by_id = dict(zip(rule.channel_ids(), rule.channels, strict=True))
        sent: set[tuple[str, str]] = set()
        errors: dict[str, str] = {}
        for entry in pending:
            message = AlertMessage.from_json(entry["message"])
            for channel_id in entry["channels"]:
                channel = by_id.get(channel_id)
                if channel is None:  # the rule changed since: nothing left to send it to
                    sent.add((entry["id"], channel_id))
                    continue
                if channel_id in errors:
                    continue
                try:
                    deliver(channel, message, self.poster, self.environ, sleep=self.sleep)
                except EventOpsError as exc:
                    errors[channel_id] = f"{channel_id}: {exc.message}"
                else:
                    sent.add((entry["id"], channel_id))
        return self._record(rule, group, {e["id"] for e in pending}, sent, errors)

    def _record(
        self, rule: AlertRule, group: str, tried: set[str], sent: set[tuple[str, str]],
        errors: Mapping[str, str],
    ) -> int:  # fmt: skip
        with self.store.session() as session:
            row = session.get(AlertStateRow, (rule.name, group), with_for_update=True)
            if row is None:
                return 0
            now, give_up = self.now(), False
            if errors:
                row.delivery_attempts += 1
                row.last_delivery_error = "; ".join(errors.values())[:2000]
                give_up = row.delivery_attempts >= self.max_delivery_rounds
                delay = min(self.retry_backoff * 2 ** (row.delivery_attempts - 1),
                            self.max_retry_backoff)  # fmt: skip
                row.next_delivery_at = now + timedelta(seconds=delay)
                if give_up:
                    log.error("alert %s/%s: gave up delivering after %d rounds: %s",
                              rule.name, group, row.delivery_attempts, row.last_delivery_error)  # fmt: skip
                    row.delivery_attempts = 0
                else:
                    log.warning("alert %s/%s: delivery failed (round %d, retry in %.0fs): %s",
                                rule.name, group, row.delivery_attempts, delay,
                                row.last_delivery_error)  # fmt: skip
            else:
                row.delivery_attempts, row.last_delivery_error = 0, None
            done = row.settle(tried, sent, give_up=give_up)
            if done:
                row.delivered_at = now
        return done

    def retry_pending(self) -> int:
        """Deliver every alert whose pending notifications are due; returns how many went out."""
        now = self.now()
        with self.store.session() as session:
            due = session.execute(
                select(AlertStateRow.rule, AlertStateRow.group_key).where(
                    AlertStateRow.delivery_pending.is_(True),
                    or_(
                        AlertStateRow.next_delivery_at.is_(None),
                        AlertStateRow.next_delivery_at <= now,
                    ),
                )
            ).all()
        delivered = 0
        for rule_name, group in due:
            if rule_name not in self.rules:
                log.warning(
                    "alert %s/%s has undelivered notifications but no rule", rule_name, group
                )
                continue
            delivered += self.deliver(rule_name, group, due_only=True)
        return delivered

    def run_retries(self, stop: threading.Event, interval: float = 5.0) -> None:
        """Call `retry_pending` every `interval` seconds until `stop` is set; a failing store is
        logged and tried again at the next tick."""
        while not stop.wait(interval):
            try:
                self.retry_pending()
            except Exception as exc:
                log.warning("alert delivery retry failed: %s: %s", type(exc).__name__, exc)

    def close(self) -> None:
        self.poster.close()


def trial_message(rule: AlertRule) -> AlertMessage:
    """What `eventops alerts test` sends through `rule`'s channels (marked as a test)."""
    summary = f"test message for alert rule {rule.name!r} (eventops alerts test)"
    event = Event(type="alert.fired", subject=rule.name, source=SOURCE, data={
        "rule": rule.name, "severity": rule.severity, "summary": summary, "test": True})  # fmt: skip
    return AlertMessage(id=event.id, rule=rule.name, severity=rule.severity, status="firing",
                        summary=summary, group="test", since=format_time(event.time),
                        event=event.to_dict(), test=True)  # fmt: skip


def _duration(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


__all__ = ["AlertRule", "AlertService", "Outcome", "trial_message"]
