"""The model registry: versions and aliases in MLflow, promotion gates, decisions as events.

`register_model` (inside a pipeline step) logs and registers a model and announces
`model.version.registered`; `GateService` judges each new version with its `Gate` against the
champion on one holdout; `Registry` moves the `champion` / `challenger` aliases and keeps every
decision, so a rollback knows where to go.
"""

from eventops.registry.client import Registry
from eventops.registry.gates import Decision, Gate, evaluate
from eventops.registry.register import RegisteredVersion, register_model
from eventops.registry.service import GateService
from eventops.registry.views import DecisionView, ModelSummary, ModelView, VersionView

__all__ = [
    "Decision",
    "DecisionView",
    "Gate",
    "GateService",
    "ModelSummary",
    "ModelView",
    "RegisteredVersion",
    "Registry",
    "VersionView",
    "evaluate",
    "register_model",
]
