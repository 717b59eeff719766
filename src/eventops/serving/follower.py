"""Following an alias: swap to the version the registry's alias names, as soon as it moves.

Two paths lead to the same `refresh`:

* the bus: a read-only consumer (no group: every replica sees every event, nothing is
  committed) of the ``model`` topic, starting at the latest offset, wakes a slot when a
  ``model.version.promoted`` or ``model.version.rolled_back`` event names its model and alias;
* a poll of the registry every `poll_seconds` (30 s by default), the backstop for an event that
  was missed (bus down, server started between the alias move and its event).

`refresh` asks the registry what the alias names now (the event is the signal, the registry the
truth, so events replayed out of order cannot move a server backwards), loads that version
beside the current one, warms it, swaps, and announces ``deployment.updated`` (or
``deployment.rolled_back``) through the store's outbox. A version that fails to load or warm is
not served: the old one stays, the failure is logged and counted, the next poll tries again.
Each replica announces its own swap (`instance` in the data tells them apart).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from eventops.errors import EventOpsError
from eventops.events.bus import Bus, topic_for
from eventops.events.envelope import Event
from eventops.serving.models import LoadedModel, ModelRef, ModelSlot, load_model, resolve
from eventops.store import Store, add_event

log = logging.getLogger(__name__)

FOLLOWED = frozenset({"model.version.promoted", "model.version.rolled_back"})
SwapHook = Callable[[ModelSlot, LoadedModel, LoadedModel | None], None]
FailureHook = Callable[[ModelSlot, BaseException], None]


class AliasFollower:
    """A thread keeping each slot on the version its alias names."""

    def __init__(
        self,
        deployment: str,
        slots: Sequence[ModelSlot],
        *,
        bus: Bus | None = None,
        store: Store | None = None,
        relay: Any = None,
        poll_seconds: float = 30.0,
        loader: Callable[[ModelRef], LoadedModel] | None = None,
        resolver: Callable[[str], ModelRef] | None = None,
        on_swap: SwapHook | None = None,
        on_failure: FailureHook | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError("poll_seconds must be positive")
        self.deployment = deployment
        self.slots = [s for s in slots if resolve_alias(s.uri) is not None]
        self.bus = bus
        self.store = store
        self.relay = relay
        self.poll_seconds = poll_seconds
        self.loader = loader or load_model
        self.resolver = resolver or resolve
        self.on_swap = on_swap
        self.on_failure = on_failure
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.events: deque[Event] = deque(maxlen=100)  # what it announced, newest last
        self.listening = threading.Event()  # set once the bus consumer polled once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unresolved: dict[str, str] = {}  # uri -> the last reason it did not resolve

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        if self._thread is None and self.slots:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"follow-{self.deployment}", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        consumer = None
        if self.bus is not None:
            try:
                topic = topic_for("model.version.promoted", self.bus.prefix)
                consumer = self.bus.consumer(None, [topic], start="latest")
            except Exception as exc:
                log.warning("cannot follow the bus (%s); polling the registry only", exc)
        next_poll = 0.0  # check once at start: an alias may have moved before we listened
        try:
            while not self._stop.is_set():
                wait = max(0.0, min(0.5, next_poll - time.monotonic()))
                if consumer is not None:
                    try:
                        records = consumer.poll(wait)
                    except Exception as exc:
                        log.warning("bus poll failed: %s", exc)
                        records = []
                        self._stop.wait(1.0)
                    self.listening.set()
                    for record in records:
                        if record.event is not None and record.event.type in FOLLOWED:
                            self._guarded(self.on_event, record.event)
                else:
                    self.listening.set()
                    self._stop.wait(wait)
                if time.monotonic() >= next_poll:
                    for slot in self.slots:
                        self._guarded(self.refresh, slot)
                    next_poll = time.monotonic() + self.poll_seconds
        finally:
            if consumer is not None:
                consumer.close()

    def _guarded(self, step: Callable[[Any], Any], arg: Any) -> None:
        """Run one step of the loop; an error is logged and the loop goes on (a thread that
        died here would stop following without a word while the server keeps answering)."""
        try:
            step(arg)
        except Exception:
            log.exception("following %s: %s failed; trying again", self.deployment, step.__name__)

    # ------------------------------------------------------------------ swapping
    def on_event(self, event: Event) -> None:
        data = event.data if isinstance(event.data, dict) else {}
        for slot in self.slots:
            followed = resolve_alias(slot.uri)
            assert followed is not None
            model, alias = followed
            if data.get("model") == model and data.get("alias", "champion") == alias:
                self.refresh(slot, cause=event)

    def refresh(self, slot: ModelSlot, *, cause: Event | None = None) -> LoadedModel | None:
        """Load and swap to the alias's version if it differs; the new model, or None."""
        with slot.reload_lock:
            current = slot.model
            try:
                ref = self.resolver(slot.uri)
            except EventOpsError as exc:  # the alias does not exist (yet), or the registry is down
                self._resolve_failed(slot, exc)
                return None
            except Exception as exc:
                log.warning("cannot resolve %s: %s: %s", slot.uri, type(exc).__name__, exc)
                return None
            self._unresolved.pop(slot.uri, None)
            if current is not None and ref.version == current.version:
                return None
            try:
                model = self.loader(ref)
            except Exception as exc:
                log.warning("not swapping %s to %s: %s", slot.role, ref.pinned, exc)
                if self.on_failure is not None:
                    try:
                        self.on_failure(slot, exc)
                    except Exception:
                        log.exception("the failure hook failed for %s", slot.role)
                return None
            previous = slot.swap(model)
            log.info(
                "%s now serves %s version %s (was %s)",
                slot.role, model.name, model.version, previous.version if previous else None,
            )  # fmt: skip
        if self.on_swap is not None:
            try:
                self.on_swap(slot, model, previous)
            except Exception:  # the swap happened; announce it all the same
                log.exception("the swap hook failed for %s version %s", slot.role, model.version)
        self.announce(slot, model, previous, cause)
        return model

    def _resolve_failed(self, slot: ModelSlot, exc: EventOpsError) -> None:
        """A warning when the reason changes, debug while it repeats every poll (a challenger
        alias that does not exist yet is normal and would flood the log)."""
        message = str(exc)
        if self._unresolved.get(slot.uri) != message:
            self._unresolved[slot.uri] = message
            log.warning("cannot resolve %s: %s", slot.uri, message)
        else:
            log.debug("cannot resolve %s: %s", slot.uri, message)

    def announce(
        self,
        slot: ModelSlot,
        model: LoadedModel,
        previous: LoadedModel | None,
        cause: Event | None,
    ) -> Event:
        before = previous.version if previous is not None else None
        back = _is_rollback(cause, before, model.version)
        data = {
            "deployment": self.deployment, "model": model.name, "version": model.version,
            "previous_version": before, "alias": model.ref.alias, "role": slot.role,
            "instance": self.instance,
        }  # fmt: skip
        kind = "deployment.rolled_back" if back else "deployment.updated"
        source = f"/eventops/serving/{self.deployment}"
        if cause is not None:
            event = cause.caused(kind, data=data, subject=self.deployment, source=source)
        else:
            event = Event(type=kind, source=source, subject=self.deployment, data=data)
        self.events.append(event)
        if self.store is not None:
            try:
                with self.store.session() as session:
                    add_event(session, event)
                if self.relay is not None:
                    self.relay.relay_once()
            except Exception as exc:  # the swap happened; only its announcement is late
                log.warning("announcing %s failed: %s", kind, exc)
        return event


def resolve_alias(uri: str) -> tuple[str, str] | None:
    """(model, alias) when `uri` follows an alias (``models:/name@alias``), else None."""
    if not uri.startswith("models:/"):
        return None
    body = uri.removeprefix("models:/").strip("/")
    if "@" not in body:
        return None
    name, alias = body.rsplit("@", 1)
    return name, alias


def _is_rollback(cause: Event | None, before: str | None, after: str) -> bool:
    if cause is not None:
        return cause.type == "model.version.rolled_back"
    if before is not None and before.isdigit() and after.isdigit():
        return int(after) < int(before)
    return False


__all__ = ["FOLLOWED", "AliasFollower", "resolve_alias"]
