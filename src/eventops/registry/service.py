"""The gate as a service: every `model.version.registered` event is judged once.

A model with a gate gets the gate's decision. A model without one has nothing to judge a
candidate by, so the service only fills an empty seat: the first version becomes champion
(evidence says why), and later versions stay registered for a person to promote
(`eventops models promote`) — replacing a live model needs a gate or a person.

Each event's effect happens once: the decision row, its event and the processed-event mark
commit together (`eventops.store.claim`). The evaluation itself (loading two models, scoring a
holdout) runs before that transaction, so the store's write lock is not held for seconds;
a duplicate delivered meanwhile is caught by the claim and leaves no second decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from eventops.errors import ValidationError
from eventops.events.bus import Bus
from eventops.events.catalog import ModelRegistered
from eventops.events.envelope import Event
from eventops.events.subscription import Subscription
from eventops.registry.client import Registry
from eventops.registry.gates import Decision, Gate, evaluate
from eventops.registry.names import CHAMPION
from eventops.registry.views import DecisionView
from eventops.store import already_processed, claim

log = logging.getLogger(__name__)

REGISTERED = "model.version.registered"
NO_GATE = "no gate for this model and no champion yet: the first version becomes champion"


class GateService:
    """Applies `gates` (at most one per model) to newly registered versions."""

    def __init__(
        self,
        registry: Registry,
        gates: Iterable[Gate] = (),
        *,
        consumer: str = "registry-gate",
        actor: str = "gate",
    ) -> None:
        self.registry = registry
        self.gates: dict[str, Gate] = {}
        for gate in gates:
            if gate.model in self.gates:
                raise ValidationError(
                    f"model {gate.model!r} has more than one gate",
                    field=f"gates.{gate.model}",
                    rule="unique",
                )
            self.gates[gate.model] = gate
        self.consumer = consumer
        self.actor = actor

    def decide(self, model: str, version: str) -> Decision | None:
        """What the service would do with this version (None: leave it registered)."""
        gate = self.gates.get(model)
        if gate is None:
            # The alias already on this version: an earlier try moved it but its decision was
            # never recorded (the store failed); recording it now completes that try.
            if self.registry.alias(model, CHAMPION) in (None, version):
                return Decision(model, version, "promoted", {"reason": NO_GATE, "gate": None})
            return None
        try:
            return evaluate(gate, self.registry, model, version)
        except ValidationError as exc:
            # The version cannot be judged (no holdout, a bad label, a model that fails on the
            # holdout): retrying will not change that, so it is a rejection with the reason.
            evidence = {
                "gate": gate.to_json(),
                "error": exc.message,
                "field": exc.field,
                "rule": exc.rule,
                "reason": f"cannot evaluate: {exc}",
            }
            return Decision(model, version, "rejected", evidence)

    def handle(self, event: Event) -> DecisionView | None:
        """Judge the version `event` announces; None when skipped (another type, a duplicate,
        or a model without a gate that already has a champion)."""
        if event.type != REGISTERED:
            return None
        data = ModelRegistered.model_validate(event.data)
        store = self.registry.store
        if already_processed(store, self.consumer, event.id):
            log.debug("event %s already judged; skipped", event.id)
            return None
        decision = self.decide(data.model, data.version)
        with store.session() as session:
            if not claim(session, self.consumer, event.id):
                return None
            if decision is None:
                log.info(
                    "model %s has no gate and a champion: version %s stays registered",
                    data.model, data.version,
                )  # fmt: skip
                return None
            return self._apply(decision, event, session)

    def _apply(self, decision: Decision, cause: Event, session: Any) -> DecisionView:
        options: dict[str, Any] = {
            "actor": self.actor,
            "evidence": decision.evidence,
            "cause": cause,
            "session": session,
        }
        if decision.outcome == "promoted":
            return self.registry.promote(decision.model, decision.version, **options)
        if decision.outcome == "approval_requested":
            return self.registry.request_approval(decision.model, decision.version, **options)
        return self.registry.reject(decision.model, decision.version, **options)

    def subscription(
        self, bus: Bus, group: str = "eventops-registry", **options: Any
    ) -> Subscription:
        """A `Subscription` judging every registered version (call `.start()`).

        A new consumer group starts from the earliest retained event (`start="earliest"`,
        overridable in `options`, which go to `Subscription`): a version registered while no
        gate service was running must still be judged, and handling is idempotent, so events
        judged before are skipped. A group with committed offsets resumes from them.
        """
        options.setdefault("start", "earliest")
        return Subscription(bus, group, self.handle, types=[REGISTERED], **options)
