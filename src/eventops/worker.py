"""`Worker` runs the control-plane roles (`ROLES`) for a project in one process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

from eventops.config import AwsSettings
from eventops.errors import BackendUnavailable, ValidationError
from eventops.events.bus import Bus
from eventops.events.envelope import Event
from eventops.events.forward import Forwarder, Sink
from eventops.events.subscription import Subscription
from eventops.lake.catalog import Lake
from eventops.lake.storage import LakeStorage
from eventops.lake.transforms import TransformRunner
from eventops.monitoring.alerts import AlertService
from eventops.pipelines.executors import Executor
from eventops.pipelines.runner import REQUESTED, Runner
from eventops.pipelines.tracking import Tracker
from eventops.pipelines.triggers import TriggerEngine
from eventops.project import Project
from eventops.registry import GateService, Registry
from eventops.store import OutboxRelay, Store

log = logging.getLogger(__name__)

ROLES = ("triggers", "runner", "transforms", "gates", "monitors", "alerts", "relay", "forward")


class Worker:
    """The control-plane roles for one project, in threads of this process.

    - ``triggers``: a `TriggerEngine` over the project's pipelines' triggers;
    - ``runner``: `Runner.resume_stale()` at start, then every `pipeline.run.requested` for one of
      the project's pipelines (requests for other pipelines are left to their own workers);
      every heartbeat interval it also takes over runs whose worker stopped beating;
    - ``transforms``: a `TransformRunner` over the project's transforms;
    - ``gates``: a `GateService` deciding every `model.version.registered` with the project's
      gates (needs a `Registry`; without one the role is skipped with a warning);
    - ``monitors``: a `MonitorService` over the project's monitors (drift windows on captured
      predictions, performance on `feedback.received`), ticking for time windows;
    - ``alerts``: an `AlertService` routing events to the project's alert rules' channels,
      with a loop re-delivering what a channel refused;
    - ``relay``: the outbox relay loop;
    - ``forward``: one `Forwarder` per configured AWS sink (`aws` settings): events on an
      EventBridge bus, on a Kinesis stream, monitor metrics in CloudWatch; skipped when none is
      configured.

    Consumer groups are per project (``eventops-<role>.<project>``), so workers of different
    projects sharing one bus each see every event. Each role gets its own bus connection.
    """

    def __init__(
        self,
        project: Project,
        store: Store,
        storage: LakeStorage,
        open_bus: Callable[[], Bus],
        *,
        roles: Iterable[str] = ROLES,
        executor: Executor | None = None,
        triggers_from: Literal["earliest", "latest"] = "latest",
        tick_interval: float = 1.0,
        relay_interval: float = 0.2,
        max_runs: int | None = None,
        tracker: Tracker | None = None,
        registry: Registry | None = None,
        aws: AwsSettings | None = None,
    ) -> None:
        self.aws = aws
        self.forwarders: list[Forwarder] = []
        self.tracker = tracker
        self.registry = registry
        self.roles = tuple(dict.fromkeys(roles))
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise ValidationError(
                f"unknown role {unknown[0]!r}; use {', '.join(ROLES)} or all",
                field="--role",
                rule="enum",
            )
        self.project, self.store, self.storage = project, store, storage
        self.open_bus = open_bus
        self.executor = executor
        self.triggers_from: Literal["earliest", "latest"] = triggers_from
        self.tick_interval, self.relay_interval = tick_interval, relay_interval
        self.max_runs = max_runs
        self.runs_done = 0
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self._buses: list[Bus] = []
        self._threads: list[threading.Thread] = []
        self._stoppers: list[Callable[[], None]] = []
        self.engine: TriggerEngine | None = None
        self.runner: Runner | None = None
        self.transforms: TransformRunner | None = None
        self.subscriptions: list[Subscription] = []
        self._lock = threading.Lock()

    def group(self, role: str) -> str:
        return f"eventops-{role}.{self.project.name}"

    def _bus(self) -> Bus:
        bus = self.open_bus()
        self._buses.append(bus)
        return bus

    def _thread(self, name: str, target: Callable[[], None]) -> None:
        def guarded() -> None:
            try:
                target()
            except Exception as exc:
                log.exception("worker role %s stopped with an error; stopping the worker", name)
                self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
                self.stop_event.set()

        thread = threading.Thread(target=guarded, name=f"worker-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def start(self) -> Worker:
        if "relay" in self.roles:
            relay = OutboxRelay(self.store, self._bus())
            self._thread("relay", lambda: relay.run(self.stop_event, self.relay_interval))
        if "triggers" in self.roles:
            rules = self.project.rules()
            self.engine = TriggerEngine(
                self.store,
                self._bus(),
                rules,
                group=self.group("triggers"),
                relay=OutboxRelay(self.store, self._bus()),
                start=self.triggers_from,
                tick_interval=self.tick_interval,
            )
            engine = self.engine
            self._thread("triggers", lambda: engine.run(self.stop_event))
        if "transforms" in self.roles and self.project.transforms:
            self.transforms = TransformRunner(
                self._bus(),
                Lake(self.store, self.storage),
                self.project.transforms,
                group=self.group("transforms"),
                relay=OutboxRelay(self.store, self._bus()),
            )
            self.subscriptions.append(self.transforms.subscription)
            self.transforms.subscription.start()
        if "gates" in self.roles:
            if self.registry is None:
                log.warning("role gates skipped: the worker was given no model registry")
            else:
                service = GateService(self.registry, list(self.project.gates.values()))
                subscription = service.subscription(self._bus(), self.group("gates"))
                self.subscriptions.append(subscription)
                subscription.start()
        if "monitors" in self.roles and self.project.monitors:
            self._start_monitors()
        if "alerts" in self.roles and self.project.alerts:
            alerts = AlertService(
                self.store,
                list(self.project.alerts.values()),
                consumer=f"alerts.{self.project.name}",
            )
            self._stoppers.append(alerts.close)
            subscription = alerts.subscription(self._bus(), self.group("alerts"))
            self.subscriptions.append(subscription)
            subscription.start()
            self._thread("alerts", lambda: alerts.run_retries(self.stop_event))
        if "runner" in self.roles:
            self._start_runner()
        if "forward" in self.roles:
            self._start_forwarders()
        return self

    def sinks(self) -> list[Sink]:
        """The AWS sinks the settings name (imported here: boto3 only when one is configured)."""
        settings = self.aws
        sinks: list[Sink] = []
        if settings is None:
            return sinks
        if settings.eventbridge_bus:
            from eventops.events.eventbridge import EventBridgeSink

            sinks.append(
                EventBridgeSink(
                    settings.eventbridge_bus,
                    types=settings.eventbridge_types,
                    source=settings.eventbridge_source,
                    region=settings.region,
                )
            )
        if settings.kinesis_stream:
            from eventops.events.kinesis_sink import KinesisSink

            sinks.append(
                KinesisSink(
                    settings.kinesis_stream, types=settings.kinesis_types, region=settings.region
                )
            )
        if settings.cloudwatch_namespace:
            from eventops.monitoring.cloudwatch import MonitorMetricsSink

            sinks.append(MonitorMetricsSink(settings.cloudwatch_namespace, region=settings.region))
        return sinks

    def _start_forwarders(self) -> None:
        sinks = self.sinks()
        if not sinks:
            log.info("role forward skipped: no EventBridge bus, Kinesis stream or CloudWatch "
                     "namespace in the aws settings")  # fmt: skip
            return
        for sink in sinks:
            kind = sink.name.split(":", 1)[0]
            forwarder = Forwarder(self._bus(), sink, group=self.group(f"forward-{kind}"))
            self.forwarders.append(forwarder)
            self._thread(f"forward-{kind}", lambda f=forwarder: f.run(self.stop_event))  # type: ignore[misc]

    def _start_monitors(self) -> None:
        # imported here: the drift engine loads scipy, which every other command can do without
        from eventops.monitoring.service import MonitorService

        service = MonitorService(
            Lake(self.store, self.storage),
            list(self.project.monitors.values()),
            group=self.group("monitors"),
            relay=OutboxRelay(self.store, self._bus()),
            tick_interval=self.tick_interval,
        )
        subscription = service.subscription(self._bus())
        self.subscriptions.append(subscription)
        subscription.start()
        self._thread("monitors", lambda: service.run(self.stop_event))

    def _start_runner(self) -> None:
        runner = self.runner = Runner(
            self.store, self.storage, executor=self.executor, tracker=self.tracker
        )
        inner = runner.run_requested(self._bus(), self.group("runner")).handler
        ours = set(self.project.pipelines)

        def handle(event: Event) -> None:
            data = event.data if isinstance(event.data, Mapping) else {}
            if data.get("pipeline") not in ours:
                return
            inner(event)
            self._count_run()

        subscription = Subscription(
            self._bus(), self.group("runner"), handle, types=[REQUESTED], start="earliest"
        )
        self.subscriptions.append(subscription)

        def resume(how: str) -> None:
            try:
                for run_id in runner.resume_stale(ours):
                    log.warning("%s run %s", how, run_id)
                    self._count_run()
            except BackendUnavailable as exc:  # the next sweep tries again
                log.warning("cannot look for abandoned runs now: %s", exc)

        def run() -> None:
            resume("resumed")
            subscription.run()

        def sweep() -> None:
            # A worker killed mid-run leaves its run `running` with a heartbeat that stops; once
            # it is stale, a live worker takes it over here instead of waiting for a restart. A
            # request whose event never arrived (a lost broker) is run here too.
            while not self.stop_event.wait(runner.heartbeat_interval):
                resume("took over")

        self._thread("runner", run)
        self._thread("runner-sweep", sweep)

    def _count_run(self) -> None:
        with self._lock:
            self.runs_done += 1
            if self.max_runs is not None and self.runs_done >= self.max_runs:
                self.stop_event.set()

    @property
    def ready(self) -> bool:
        """True once every subscription (the engine's included) has its partitions."""
        subs = list(self.subscriptions)
        if self.engine is not None and self.engine.patterns:
            subs.append(self.engine.subscription)
        return all(s.assignment for s in subs)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (a role failed, `max_runs` reached, `stop()`) or `timeout`."""
        return self.stop_event.wait(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        for subscription in self.subscriptions:
            subscription.stop(timeout)
        for thread in self._threads:
            thread.join(timeout)
        for stopper in self._stoppers:
            stopper()
        if "relay" in self.roles:
            try:
                OutboxRelay(self.store, self._buses[0]).relay_once()
            except Exception as exc:
                log.warning("final relay failed; events stay in the outbox: %s", exc)
        for bus in self._buses:
            bus.close()
        self._buses.clear()
        if self.executor is not None:
            self.executor.close()


__all__ = ["ROLES", "Worker"]
