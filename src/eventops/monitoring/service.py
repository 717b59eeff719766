"""`MonitorService`: runs a project's monitors on the events of the platform.

It consumes two event types:

* ``dataset.batch.ingested`` of a monitor's dataset (captured predictions by default): the
  batch joins the monitor's open drift window (`monitor_windows`, once per event and monitor:
  `idempotent`). When the window holds `window_rows` rows, or on a tick `window_seconds` after
  it opened, the service reads exactly its batches (shadow rows left out), compares them with
  the reference's profile (`drift_report`, plus the quality checks), and records the check with
  its events (`record_check`). A window is whole batches: it closes at the first batch that
  brings it to `window_rows` or more. The batch also retries the join of pending labels
  (performance) against itself.
* ``feedback.received`` of a monitor's deployment: the label is kept (`record_feedback`) and,
  once enough labels wait to fill a window, joined to the captured predictions and scored
  (`eventops.monitoring.performance`).

Windows close in two steps: the event's transaction only adds the batch; the check is computed
outside any transaction (reading Parquet and profiling can take a while and must not hold the
store's lock) and recorded under the window row's lock only if the window is still the one it
read, so two services never record one window twice, and a crash in between leaves a full
window that the next tick closes. Everything is in the store, so a restart carries on with the
open windows and waiting labels.

What a drift check compares is in `eventops.monitoring.window_drift`; how labels are joined and
scored in `eventops.monitoring.performance`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select

from eventops.errors import ValidationError
from eventops.events.bus import Bus, StartAt
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.lake.catalog import Lake
from eventops.monitoring import performance
from eventops.monitoring.monitors import Check, Monitor, Window, record_check
from eventops.monitoring.window_drift import References, drift_outcome
from eventops.store.catalog import BatchRow
from eventops.store.idempotency import idempotent
from eventops.store.monitoring import MonitorLabelRow, MonitorWindowRow, lock_window
from eventops.store.outbox import OutboxRelay
from eventops.store.tables import utcnow

log = logging.getLogger(__name__)

INGESTED = "dataset.batch.ingested"
FEEDBACK = "feedback.received"
TYPES = (INGESTED, FEEDBACK)


class MonitorService:
    """The monitors of one project: feed it events (`subscription`, or `handle` directly) and
    call `tick` (or `run`/`start`) so time windows close and waiting labels are retried."""

    def __init__(
        self,
        lake: Lake,
        monitors: Iterable[Monitor],
        *,
        group: str = "eventops-monitors",
        relay: OutboxRelay | None = None,
        tick_interval: float = 1.0,
        match_interval: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.monitors: dict[str, Monitor] = {}
        for monitor in monitors:
            if monitor.name in self.monitors:
                raise ValidationError(
                    f"two monitors are named {monitor.name!r}", field="monitors", rule="unique"
                )
            self.monitors[monitor.name] = monitor
        if not 0.01 <= tick_interval <= 60:
            raise ValueError("tick_interval must be between 0.01 and 60 seconds")
        self.lake, self.store, self.relay, self.clock = lake, lake.store, relay, clock
        self.tick_interval, self.match_interval = tick_interval, match_interval
        self.references = References(lake)
        # monitor -> when (monotonic) a join last left labels unmatched
        self._futile_join: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._subscription: Subscription | None = None
        self.group = group
        self._bind(group)

    def _bind(self, group: str) -> None:
        """Idempotency per monitor (``<group>:<monitor>``): a monitor added later still applies
        a replayed event the others have already seen."""
        self.group = group
        self._add_batch = {
            m.name: idempotent(self.store, f"{group}:{m.name}", self._adder(m))
            for m in self.monitors.values()
            if m.reference is not None
        }
        self._add_label = {
            m.name: idempotent(self.store, f"{group}:{m.name}", self._labeller(m))
            for m in self.monitors.values()
            if m.performance is not None
        }

    # ------------------------------------------------------------------ events
    def subscription(
        self, bus: Bus, group: str | None = None, *, start: StartAt = "earliest"
    ) -> Subscription:
        """A subscription delivering this service's event types to `handle`. `group` (default:
        the service's) names the consumer group and the idempotency records. From "earliest",
        a new group also windows the captured data still in the bus's retention."""
        if group is not None and group != self.group:
            self._bind(group)
        return Subscription(bus, self.group, self.handle, types=list(TYPES), start=start)

    def handle(self, event: Event) -> list[Check]:
        """Apply one event to every monitor it concerns; returns the checks it completed."""
        data = event.data if isinstance(event.data, dict) else {}
        checks: list[Check] = []
        if event.type == INGESTED:
            for monitor in self.monitors.values():
                if monitor.source_dataset == data.get("dataset"):
                    checks += self._on_batch(monitor, event, data)
        elif event.type == FEEDBACK:
            for monitor in self.monitors.values():
                if monitor.performance is not None and monitor.deployment == data.get("deployment"):
                    waiting = self._add_label[monitor.name](event)
                    if waiting is not None:  # None: a duplicate, skipped
                        checks += self._on_label(monitor, waiting)
        self._relay(checks)
        return checks

    def _on_batch(self, monitor: Monitor, event: Event, data: dict[str, Any]) -> list[Check]:
        checks: list[Check] = []
        now = self.clock()
        if monitor.reference is not None:
            self._add_batch[monitor.name](event)
            check = self._close_due(monitor, now)
            checks += [check] if check else []
        batch_id = data.get("batch_id")
        if monitor.performance is not None and isinstance(batch_id, str):
            with self.store.session() as session:
                batch = session.get(BatchRow, batch_id)
            if batch is not None and performance.join_pending(self.lake, monitor, now, [batch]):
                checks += performance.close_windows(self.lake, monitor, now)
        return checks

    def _adder(self, monitor: Monitor) -> Callable[[Event, Any], None]:
        def add(event: Event, session: Any) -> None:
            data = event.data if isinstance(event.data, dict) else {}
            batch_id, rows = data.get("batch_id"), data.get("rows")
            if not isinstance(batch_id, str) or not isinstance(rows, int) or rows <= 0:
                return  # an empty batch (all rows quarantined) changes no window
            state = lock_window(session, monitor.name, "drift")
            if batch_id in state.batch_ids:
                return
            now = self.clock()
            state.batch_ids = [*state.batch_ids, batch_id]
            state.event_ids = [*state.event_ids, event.id]
            state.rows += rows
            state.opened_at = state.opened_at or now
            state.updated_at = now

        return add

    def _labeller(self, monitor: Monitor) -> Callable[[Event, Any], dict[str, int]]:
        def add(event: Event, session: Any) -> dict[str, int]:
            performance.record_feedback(session, monitor, event, self.clock())
            return performance.counts(session, monitor.name)

        return add

    # ------------------------------------------------------------------ drift windows
    def _due(self, monitor: Monitor, state: MonitorWindowRow, now: datetime) -> str | None:
        if not state.batch_ids:
            return None
        if monitor.window_rows is not None and state.rows >= monitor.window_rows:
            return "rows"
        opened, seconds = state.opened_at, monitor.window_seconds
        if (
            seconds is not None
            and opened is not None
            and now >= opened + timedelta(seconds=seconds)
        ):
            return "time"
        return None

    def _close_due(self, monitor: Monitor, now: datetime) -> Check | None:
        """Close the monitor's drift window if it is due (see the module docstring)."""
        for _ in range(5):  # another service changed the window meanwhile: read it again
            with self.store.session() as session:
                seen = session.get(MonitorWindowRow, (monitor.name, "drift"))
            trigger = None if seen is None else self._due(monitor, seen, now)
            if seen is None or trigger is None:
                return None
            outcome = drift_outcome(self.lake, self.references, monitor, seen.batch_ids)
            with self.store.session() as session:
                state = lock_window(session, monitor.name, "drift")
                if state.seq != seen.seq or state.batch_ids != seen.batch_ids:
                    continue
                state.seq += 1
                cause = state.event_ids[-1] if state.event_ids else None
                window = Window(trigger, state.seq, state.opened_at, now, state.batch_ids, cause)
                check = record_check(session, monitor, window, outcome)
                state.rows, state.batch_ids, state.event_ids = 0, [], []
                state.opened_at, state.updated_at = None, now
                return check
        log.warning("monitor %s: its window kept changing; it closes on a later tick", monitor.name)
        return None

    # ------------------------------------------------------------------ labels
    def _on_label(self, monitor: Monitor, waiting: dict[str, int]) -> list[Check]:
        """After a label: join the waiting labels once they could fill a window, unless a join
        that left labels unmatched ran less than `match_interval` ago (the next capture batch
        or tick retries them); score the windows that are full."""
        assert monitor.performance is not None
        size = monitor.performance.window_labels
        if sum(waiting.values()) < size:
            return []
        join = bool(waiting.get("pending")) and self._join_allowed(monitor)
        if not join and sum(waiting.get(s, 0) for s in performance.RESOLVED) < size:
            return []
        return self._advance_labels(monitor, self.clock(), join=join)

    def _join_allowed(self, monitor: Monitor) -> bool:
        last = self._futile_join.get(monitor.name)
        return last is None or time.monotonic() - last >= self.match_interval

    def _advance_labels(self, monitor: Monitor, now: datetime, *, join: bool) -> list[Check]:
        if join:
            performance.join_pending(self.lake, monitor, now)
            with self.store.session() as session:
                left = performance.counts(session, monitor.name).get("pending", 0)
            if left:
                self._futile_join[monitor.name] = time.monotonic()
            else:
                self._futile_join.pop(monitor.name, None)
        return performance.close_windows(self.lake, monitor, now)

    # ------------------------------------------------------------------ clock
    def tick(self, now: datetime | None = None) -> list[Check]:
        """Close due time windows; retry, expire and score waiting labels."""
        now = now or self.clock()
        checks: list[Check] = []
        for monitor in self.monitors.values():
            if monitor.reference is not None:
                check = self._close_due(monitor, now)
                checks += [check] if check else []
            if monitor.performance is not None:
                performance.expire(self.lake, monitor, now)
                with self.store.session() as session:
                    pending = performance.counts(session, monitor.name).get("pending", 0)
                join = bool(pending) and self._join_allowed(monitor)
                checks += self._advance_labels(monitor, now, join=join)
        self._relay(checks)
        return checks

    def run_check(self, name: str, now: datetime | None = None) -> list[Check]:
        """Check monitor `name` now on its latest data, outside its windows (which it leaves
        as they are): drift on the newest batches making up `window_rows` rows (or those of
        the last `window_seconds`), performance on the newest `window_labels` resolved labels.
        The checks are recorded and announced like any other (trigger ``manual``)."""
        monitor = self.monitors.get(name)
        if monitor is None:
            raise ValidationError(f"no monitor named {name!r}", field="monitor", rule="exists")
        now = now or self.clock()
        checks: list[Check] = []
        if monitor.reference is not None:
            batches = self._latest_batches(monitor, now)
            if batches:
                ids = [b.id for b in batches]
                outcome = drift_outcome(self.lake, self.references, monitor, ids)
                window = Window("manual", None, batches[0].created_at, now, [b.id for b in batches])
                with self.store.session() as session:
                    checks.append(record_check(session, monitor, window, outcome))
        if monitor.performance is not None:
            performance.join_pending(self.lake, monitor, now)
            with self.store.session() as session:
                labels = list(
                    session.scalars(
                        select(MonitorLabelRow)
                        .where(
                            MonitorLabelRow.monitor == name,
                            MonitorLabelRow.status.in_(performance.RESOLVED),
                        )
                        .order_by(MonitorLabelRow.id.desc())
                        .limit(monitor.performance.window_labels)
                    )
                )
                if labels:
                    start = min(r.received_at for r in labels)
                    window = Window("manual", None, start, now)
                    outcome = performance.evaluate(monitor, labels)
                    checks.append(record_check(session, monitor, window, outcome))
        self._relay(checks)
        return checks

    def _latest_batches(self, monitor: Monitor, now: datetime) -> list[BatchRow]:
        query = (
            select(BatchRow)
            .where(BatchRow.dataset == monitor.source_dataset, BatchRow.rows > 0)
            .order_by(BatchRow.created_at.desc(), BatchRow.id.desc())
        )
        if monitor.window_rows is None and monitor.window_seconds is not None:
            query = query.where(
                BatchRow.created_at >= now - timedelta(seconds=monitor.window_seconds)
            )
        chosen: list[BatchRow] = []
        rows = 0
        with self.store.session() as session:
            for batch in session.scalars(query):
                chosen.append(batch)
                rows += batch.rows
                if monitor.window_rows is not None and rows >= monitor.window_rows:
                    break
        return chosen[::-1]

    # ------------------------------------------------------------------ lifecycle
    def _relay(self, checks: list[Check]) -> None:
        """Publish the checks' events now; on failure they wait in the outbox for the relay."""
        if not checks or self.relay is None:
            return
        try:
            self.relay.relay_once()
        except Exception as exc:
            log.warning("monitor checks recorded; relaying their events failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        """Tick every `tick_interval` seconds until `stop` is set (events come through a
        subscription running beside it)."""
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("monitor tick failed; retrying in %.1fs", self.tick_interval)
            stop.wait(self.tick_interval)

    def start(self, bus: Bus | None = None, *, start: StartAt = "earliest") -> MonitorService:
        """Tick in a thread and, given a bus, consume its events in another; `stop()` ends both."""
        self._stop.clear()
        if bus is not None:
            self._subscription = self.subscription(bus, start=start).start()
        thread = threading.Thread(target=self.run, args=(self._stop,), name="monitors", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._subscription is not None:
            self._subscription.stop(timeout)
            self._subscription = None
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()


__all__ = ["FEEDBACK", "INGESTED", "MonitorService"]
