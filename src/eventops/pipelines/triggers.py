"""Trigger rules: events, schedules and manual starts that request pipeline runs.

A rule never runs anything itself: when it fires, the engine writes a `pipeline.run.requested`
event through the outbox in the same transaction as the rule's new state (`trigger_state`), and
the runner consumes it. Each event is applied once per engine group (`idempotent`), and a firing
is decided under the state row's lock, so two engines never fire one rule twice for the same
events or the same schedule slot. See docs/triggers.md for the semantics.
"""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
from croniter import croniter
from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from eventops.errors import ConfigError, ValidationError
from eventops.events.bus import Bus, type_matches
from eventops.events.catalog import CATALOG, RESERVED_NAMESPACES, schema_for
from eventops.events.envelope import TYPE_PATTERN, Event
from eventops.events.subscription import Subscription
from eventops.quantities import parse_duration
from eventops.store.database import Store
from eventops.store.idempotency import idempotent
from eventops.store.outbox import OutboxRelay, add_events
from eventops.store.pipelines import TriggerStateRow
from eventops.store.tables import utcnow

log = logging.getLogger(__name__)

REQUESTED = "pipeline.run.requested"
MAX_PENDING_EVENTS = 100
Params = Mapping[str, Any] | Callable[[Event | None], Mapping[str, Any]]
Clock = Callable[[], datetime]


def _digest(definition: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)).hexdigest()[:10]


def _params_repr(params: Params | None) -> Any:
    if params is None or isinstance(params, Mapping):
        return dict(params or {})
    return f"<{getattr(params, '__module__', '?')}.{getattr(params, '__qualname__', '?')}>"


def _invalid(where: str, message: str, field: str, rule: str) -> ValidationError:
    return ValidationError(f"trigger {where}: {message}", field=field, rule=rule)


class _Named:
    """A stable name (kept in `trigger_state`): `name=` or a short hash of the definition."""

    explicit_name: str | None
    label: str

    def definition(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return self.explicit_name or f"{self.label}#{_digest(self.definition())}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.definition()}


@dataclass(frozen=True)
class EventRule(_Named):
    """Fires on events matching `pattern` and `filters` (equality on keys of the event data)."""

    pattern: str
    filters: Mapping[str, Any] = field(default_factory=dict)
    min_new_rows: int | None = None
    cooldown: str | float | None = None
    params: Params | None = None
    explicit_name: str | None = None
    cooldown_seconds: float = field(default=0.0, init=False, repr=False, compare=False)

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"on:{self.pattern}"

    def __post_init__(self) -> None:
        where = f"on({self.pattern!r})"
        glob = any(ch in self.pattern for ch in "*?[")
        if not glob and not TYPE_PATTERN.match(self.pattern):
            raise _invalid(
                where, "not an event type like 'dataset.batch.ingested'", "event_type", "type"
            )
        head = self.pattern.split(".")[0]
        known = [t for t in CATALOG if fnmatch.fnmatchcase(t, self.pattern)]
        reserved = head in RESERVED_NAMESPACES and not (head == "audit" and glob)
        if reserved and not known and schema_for(self.pattern) is None:
            message = (
                f"{self.pattern!r} matches no catalogued type of the reserved {head!r} "
                "namespace (see `eventops events types`)"
            )
            raise _invalid(where, message, "event_type", "catalog")
        if self.min_new_rows is not None:
            if type(self.min_new_rows) is not int or self.min_new_rows < 1:
                raise _invalid(where, "must be a whole number >= 1", "min_new_rows", "positive")
            no_rows = [t for t in known if "rows" not in CATALOG[t].model_fields]
            if no_rows or head == "audit":
                message = f"{', '.join(no_rows) or self.pattern} has no 'rows' in its data"
                raise _invalid(where, message, "min_new_rows", "rows-field")
        try:
            seconds = parse_duration(self.cooldown or 0, field="cooldown")
        except ConfigError as exc:
            raise _invalid(where, exc.message, "cooldown", "duration") from None
        object.__setattr__(self, "cooldown_seconds", seconds)

    def definition(self) -> dict[str, Any]:
        return {
            "kind": "event",
            "event_type": self.pattern,
            "filters": dict(self.filters),
            "min_new_rows": self.min_new_rows,
            "cooldown": self.cooldown,
            "params": _params_repr(self.params),
        }

    def matches(self, event: Event) -> bool:
        if not type_matches(event.type, [self.pattern]):
            return False
        data = event.data if isinstance(event.data, Mapping) else {}
        return all(key in data and data[key] == value for key, value in self.filters.items())

    def params_for(self, event: Event | None) -> dict[str, Any]:
        if self.params is None:
            return {}
        return dict(self.params(event) if callable(self.params) else self.params)


@dataclass(frozen=True)
class ScheduleRule(_Named):
    """Fires at each due time of a 5-field cron expression (UTC) or an @alias (@hourly...)."""

    cron: str
    params: Mapping[str, Any] = field(default_factory=dict)
    explicit_name: str | None = None

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"schedule:{self.cron}"

    def __post_init__(self) -> None:
        text = self.cron.strip()
        if not (text.startswith("@") or len(text.split()) == 5) or not croniter.is_valid(text):
            message = "not a cron expression; write 5 fields like '*/5 * * * *' or @hourly, @daily"
            raise _invalid(f"schedule({self.cron!r})", message, "cron", "cron")

    def definition(self) -> dict[str, Any]:
        return {"kind": "schedule", "cron": self.cron, "params": dict(self.params)}

    def due(self, now: datetime) -> datetime:
        """The latest due time at or before `now`."""
        prev: datetime = croniter(self.cron, now).get_prev(datetime)
        nxt: datetime = croniter(self.cron, prev).get_next(datetime)
        return (nxt if nxt <= now else prev).astimezone(UTC)


@dataclass(frozen=True)
class ManualRule(_Named):
    """Never fires by itself: the pipeline runs when someone asks (`eventops run <pipeline>`)."""

    explicit_name: str | None = None
    label = "manual"

    def definition(self) -> dict[str, Any]:
        return {"kind": "manual"}


Rule = EventRule | ScheduleRule | ManualRule


def on(
    event_type: str,
    *,
    cooldown: str | float | None = None,
    min_new_rows: int | None = None,
    params: Params | None = None,
    name: str | None = None,
    **filters: Any,
) -> EventRule:
    """A rule over events of `event_type` (a glob) whose data has `filters` as keys and values."""
    kept = {k: v for k, v in filters.items() if v is not None}
    return EventRule(event_type, kept, min_new_rows, cooldown, params, name)


def schedule(
    cron: str, *, params: Mapping[str, Any] | None = None, name: str | None = None
) -> ScheduleRule:
    return ScheduleRule(cron, dict(params or {}), name)


def manual(*, name: str | None = None) -> ManualRule:
    return ManualRule(name)


def on_drift(monitor: str | None = None, **kw: Any) -> EventRule:
    return on("monitor.drift.detected", monitor=monitor, **kw)


def on_new_data(dataset: str, **kw: Any) -> EventRule:
    return on("dataset.batch.ingested", dataset=dataset, **kw)


def on_model_registered(model: str | None = None, **kw: Any) -> EventRule:
    return on("model.version.registered", model=model, **kw)


def _lock_state(session: Session, pipeline: str, rule: str) -> TriggerStateRow:
    """The rule's state row, created if missing, locked until the transaction ends."""
    insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    values = {"pipeline": pipeline, "rule": rule, "pending_rows": 0, "pending_events": []}
    session.execute(
        insert(TriggerStateRow).values(**values, updated_at=utcnow()).on_conflict_do_nothing()
    )
    query = select(TriggerStateRow).filter_by(pipeline=pipeline, rule=rule)
    return session.scalars(query.with_for_update().execution_options(populate_existing=True)).one()


class TriggerEngine:
    """Applies trigger rules to events and the clock, writing run requests through the outbox."""

    def __init__(
        self,
        store: Store,
        bus: Bus,
        rules: Mapping[str, Sequence[Rule]] | Iterable[tuple[str, Rule]],
        *,
        group: str = "eventops-triggers",
        relay: OutboxRelay | None = None,
        clock: Clock = utcnow,
        start: Literal["earliest", "latest"] = "latest",
        tick_interval: float = 1.0,
    ) -> None:
        pairs = (
            [(p, r) for p, rs in rules.items() for r in rs]
            if isinstance(rules, Mapping)
            else list(rules)
        )
        seen: set[tuple[str, str]] = set()
        for pipeline, rule in pairs:
            if (pipeline, rule.name) in seen:
                raise ValidationError(
                    f"pipeline {pipeline!r} has two trigger rules named {rule.name!r}; "
                    "give one a name=",
                    field="triggers",
                    rule="unique-name",
                )
            seen.add((pipeline, rule.name))
        if not 0.01 <= tick_interval <= 60:
            raise ValueError("tick_interval must be between 0.01 and 60 seconds")
        self.store, self.bus, self.group, self.relay, self.clock = store, bus, group, relay, clock
        self.rules: list[tuple[str, Rule]] = pairs
        self.tick_interval = tick_interval
        self.patterns = sorted({r.pattern for _, r in pairs if isinstance(r, EventRule)})
        self._apply = idempotent(store, group, self._apply_event)
        self.start_at: Literal["earliest", "latest"] = start
        self.subscription = self.new_subscription()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def new_subscription(self) -> Subscription:
        """A subscription delivering this engine's event types to `handle` (`run` makes one)."""
        return Subscription(
            self.bus, self.group, self.handle, types=self.patterns, start=self.start_at
        )

    def describe(self) -> list[dict[str, Any]]:
        return [{"pipeline": p, **r.to_dict()} for p, r in self.rules]

    # ------------------------------------------------------------------ events
    def handle(self, event: Event) -> list[Event]:
        """Apply one event to every matching rule (once per event id); returns the requests."""
        requests = self._apply(event) or []
        if requests:
            self._relay()
        return requests

    def _apply_event(self, event: Event, session: Session) -> list[Event]:
        now = self.clock()
        requests: list[Event] = []
        for pipeline, rule in self.rules:
            if not isinstance(rule, EventRule) or not rule.matches(event):
                continue
            state = _lock_state(session, pipeline, rule.name)
            rows = event.data.get("rows") if isinstance(event.data, Mapping) else None
            if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0:
                state.pending_rows += rows
            state.pending_events = [*state.pending_events, event.id][-MAX_PENDING_EVENTS:]
            state.updated_at = now
            if self._ready(rule, state, now):
                request = event.caused(
                    REQUESTED,
                    data=self._request_data(pipeline, rule, state, rule.params_for(event)),
                    subject=pipeline,
                )
                requests.append(self._fired(session, state, request, now))
        return requests

    @staticmethod
    def _ready(rule: EventRule, state: TriggerStateRow, now: datetime) -> bool:
        if not state.pending_events:
            return False
        if rule.min_new_rows is not None and state.pending_rows < rule.min_new_rows:
            return False
        cooldown = rule.cooldown_seconds
        last = state.last_fired_at
        return not cooldown or last is None or now >= last + timedelta(seconds=cooldown)

    @staticmethod
    def _request_data(
        pipeline: str, rule: EventRule, state: TriggerStateRow, params: dict[str, Any]
    ) -> dict[str, Any]:
        trigger = {
            "rule": rule.name,
            "kind": "event",
            "events": list(state.pending_events),
            "rows": state.pending_rows,
        }
        return {"pipeline": pipeline, "params": params, "trigger": trigger}

    @staticmethod
    def _fired(session: Session, state: TriggerStateRow, request: Event, now: datetime) -> Event:
        add_events(session, [request])
        state.pending_rows, state.pending_events = 0, []
        state.last_fired_at, state.last_run_id, state.updated_at = now, request.id, now
        log.info("trigger %s fired for pipeline %s (%s)", state.rule, state.pipeline, request.id)
        return request

    # ------------------------------------------------------------------ clock
    def tick(self, now: datetime | None = None) -> list[Event]:
        """Fire due schedules and event rules whose cooldown ended with their threshold met."""
        now = now or self.clock()
        requests: list[Event] = []
        for pipeline, rule in self.rules:
            if isinstance(rule, ScheduleRule):
                requests += self._tick_schedule(pipeline, rule, now)
            elif isinstance(rule, EventRule) and rule.cooldown_seconds > 0:
                requests += self._tick_cooldown(pipeline, rule, now)
        if requests:
            self._relay()
        return requests

    def _tick_cooldown(self, pipeline: str, rule: EventRule, now: datetime) -> list[Event]:
        with self.store.session() as session:
            state = session.get(TriggerStateRow, (pipeline, rule.name))
            if state is None or not self._ready(rule, state, now):
                return []
        with self.store.session() as session:
            state = _lock_state(session, pipeline, rule.name)  # re-check under the lock
            if not self._ready(rule, state, now):
                return []
            last = state.pending_events[-1]
            data = self._request_data(pipeline, rule, state, rule.params_for(None))
            data["trigger"]["deferred"] = True
            request = Event(
                type=REQUESTED, data=data, subject=pipeline, correlationid=last, causationid=last
            )
            return [self._fired(session, state, request, now)]

    def _tick_schedule(self, pipeline: str, rule: ScheduleRule, now: datetime) -> list[Event]:
        due = rule.due(now)
        state_col = TriggerStateRow.last_fired_at
        key = {"pipeline": pipeline, "rule": rule.name}
        with self.store.session() as session:
            state = session.get(TriggerStateRow, (pipeline, rule.name))
            if state is not None and state.last_fired_at is not None and state.last_fired_at >= due:
                return []
        with self.store.session() as session:
            insert = postgresql.insert if self.store.dialect == "postgresql" else sqlite.insert
            armed = session.execute(
                insert(TriggerStateRow)
                .values(**key, pending_rows=0, pending_events=[], last_fired_at=due, updated_at=now)
                .on_conflict_do_nothing()
                .returning(TriggerStateRow.rule)
            ).first()
            if armed is not None:  # first sight: the schedule starts from the next due time
                return []
            trigger = {
                "rule": rule.name,
                "kind": "schedule",
                "cron": rule.cron,
                "due": due.isoformat(),
            }
            data = {"pipeline": pipeline, "params": dict(rule.params), "trigger": trigger}
            request = Event(type=REQUESTED, data=data, subject=pipeline)
            won = session.execute(
                update(TriggerStateRow)
                .filter_by(**key)
                .where(or_(state_col.is_(None), state_col < due))
                .values(last_fired_at=due, last_run_id=request.id, updated_at=now)
                .returning(TriggerStateRow.rule)
                .execution_options(synchronize_session=False)
            ).first()
            if won is None:  # another engine fired this slot first
                return []
            add_events(session, [request])
            log.info("schedule %s fired for pipeline %s at %s", rule.name, pipeline, due)
            return [request]

    def _relay(self) -> None:
        if self.relay is None:
            return
        try:
            self.relay.relay_once()
        except Exception as exc:  # the requests are committed; the relay's own loop retries
            log.warning("could not relay run requests now (%s: %s)", type(exc).__name__, exc)

    # ------------------------------------------------------------------ lifecycle
    def run(self, stop: threading.Event) -> None:
        """Consume events (in a thread) and tick every `tick_interval` seconds until `stop`."""
        consumer: threading.Thread | None = None
        self.subscription = self.new_subscription()
        if self.patterns:
            consumer = threading.Thread(
                target=self.subscription.run, name=f"sub-{self.group}", daemon=True
            )
            consumer.start()
        try:
            while not stop.is_set():
                try:
                    self.tick()
                except Exception:
                    log.exception("trigger tick failed; retrying in %.1fs", self.tick_interval)
                stop.wait(self.tick_interval)
        finally:
            self.subscription.stop()
            if consumer is not None:
                consumer.join(30)

    def start(self) -> TriggerEngine:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.run, args=(self._stop,), name="triggers", daemon=True
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
