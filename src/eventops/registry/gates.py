"""Promotion gates: a candidate version against the champion, on the same holdout.

Declared in a project file:

    gates = [Gate(model="churn", metric="auc", min_gain=0.0, guardrails={"accuracy": ">= 0.6"})]

`evaluate` scores both versions with their `mlflow.pyfunc` models on one holdout (the gate's own
`holdout` if set, else the one logged with the candidate) and decides:

* the candidate must pass every guardrail (an absolute floor or ceiling on a metric of its own);
* with a champion, its gain on `metric` (candidate - champion when maximising, champion -
  candidate when minimising) must be at least `min_gain`; with no champion, or a champion that
  cannot score this holdout (e.g. the features changed), there is nothing to compare and the
  guardrails decide alone (the evidence says which);
* passing means promoted, or approval_requested when `manual_approval` (a person promotes with
  `eventops models promote`); anything else is rejected.

The evidence records every number behind the decision, so a rejection can be argued with.
"""

from __future__ import annotations

import math
import operator
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from eventops.errors import ValidationError
from eventops.registry.client import Registry
from eventops.registry.metrics import DIRECTIONS, MAXIMIZE, METRICS, MINIMIZE, compute
from eventops.registry.names import CHAMPION, check_model_name

Outcome = Literal["promoted", "rejected", "approval_requested"]
_GUARDRAIL = re.compile(r"^\s*(>=|<=|>|<|==)\s*([-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)\s*$")
_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Guardrail:
    metric: str
    op: str
    bound: float

    def passes(self, value: float) -> bool:
        return math.isfinite(value) and _OPERATORS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


class Gate(BaseModel):
    """When a new version of `model` may replace its champion. `direction` defaults to the
    metric's own (maximize, except log_loss, rmse and mae).

    Checked before pydantic sees the values, so that a mistake in a project file is an
    `eventops.errors.ValidationError` naming `gates.<model>.<field>`, and so that nothing is
    coerced ("yes" is not a boolean here, "0.1" is not a number).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    metric: str
    direction: Literal["maximize", "minimize"]
    min_gain: float = 0.0
    guardrails: dict[str, str] = {}
    holdout: str | None = None  # a Parquet file / URL, or a lake dataset's name
    label: str | None = None  # default: the label registered with the candidate
    manual_approval: bool = False

    def __init__(self, **data: Any) -> None:
        super().__init__(**_checked(data))

    def rules(self) -> list[Guardrail]:
        return _rules(self.model, self.guardrails)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def _rules(model: str, guardrails: Mapping[str, Any]) -> list[Guardrail]:
    out = []
    for metric, expression in guardrails.items():
        where = f"gates.{model}.guardrails.{metric}"
        if metric not in METRICS:
            raise ValidationError(
                f"unknown metric {metric!r}; one of {', '.join(METRICS)}",
                field=where,
                rule="known-metric",
            )
        found = _GUARDRAIL.match(expression) if isinstance(expression, str) else None
        if found is None:
            raise ValidationError(
                f"guardrail {expression!r}: an operator (>=, <=, >, <, ==) and a number, "
                'e.g. ">= 0.6"',
                field=where,
                rule="expression",
            )
        out.append(Guardrail(metric, found.group(1), float(found.group(2))))
    return out


def _checked(data: dict[str, Any]) -> dict[str, Any]:
    name = check_model_name(data.get("model"), field="gates.model")
    where = f"gates.{name}"
    unknown = set(data) - set(Gate.model_fields)
    if unknown:
        raise ValidationError(
            f"unknown gate setting(s) {', '.join(sorted(unknown))}",
            field=f"{where}.{sorted(unknown)[0]}",
            rule="known-key",
        )
    metric = data.get("metric")
    if metric not in METRICS:
        raise ValidationError(
            f"unknown metric {metric!r}; one of {', '.join(METRICS)}",
            field=f"{where}.metric",
            rule="known-metric",
        )
    direction = data.get("direction") or DIRECTIONS[str(metric)]
    if direction not in (MAXIMIZE, MINIMIZE):
        raise ValidationError(
            f"direction {direction!r}: maximize or minimize",
            field=f"{where}.direction",
            rule="direction",
        )
    gain = data.get("min_gain", 0.0)
    if isinstance(gain, bool) or not isinstance(gain, int | float) or not math.isfinite(gain):
        raise ValidationError(
            f"min_gain must be a finite number, not {gain!r}",
            field=f"{where}.min_gain",
            rule="number",
        )
    guardrails = data.get("guardrails") or {}
    if not isinstance(guardrails, Mapping):
        raise ValidationError(
            'guardrails map a metric to a bound, e.g. {"accuracy": ">= 0.6"}',
            field=f"{where}.guardrails",
            rule="mapping",
        )
    _rules(name, guardrails)
    for attr in ("holdout", "label"):
        value = data.get(attr)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ValidationError(
                f"{attr} must be a non-empty text", field=f"{where}.{attr}", rule="text"
            )
    if not isinstance(data.get("manual_approval", False), bool):
        raise ValidationError(
            "manual_approval must be true or false",
            field=f"{where}.manual_approval",
            rule="boolean",
        )
    return {
        **data,
        "direction": direction,
        "min_gain": float(gain),
        "guardrails": dict(guardrails),
    }


@dataclass(frozen=True)
class Decision:
    model: str
    version: str
    outcome: Outcome
    evidence: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.outcome != "rejected"


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def load_holdout(registry: Registry, ref: str, dst: str) -> Any:
    """A holdout as a pandas DataFrame from an artifact URI (file, s3, runs:/, mlflow-artifacts),
    a Parquet path or URL, or the name of a lake dataset."""
    import mlflow.artifacts
    import pandas as pd

    if "/" not in ref and not ref.endswith(".parquet"):
        if registry.lake_url is None:
            raise ValidationError(
                f"holdout {ref!r} names a dataset but the registry has no lake",
                field="holdout",
                rule="lake",
            )
        from eventops.lake.catalog import Lake
        from eventops.lake.storage import LakeStorage

        return Lake(registry.store, LakeStorage(registry.lake_url)).read(ref).to_pandas()
    if ref.startswith(("runs:/", "mlflow-artifacts:", "models:/")):
        ref = mlflow.artifacts.download_artifacts(
            artifact_uri=ref, dst_path=dst, tracking_uri=registry.tracking_uri
        )
    return pd.read_parquet(ref)


SCORE_METRICS = frozenset({"auc", "log_loss"})


def _class_scores(model: Any, features: Any) -> Any | None:
    """Class probabilities from the model under the pyfunc wrapper, when it has them.

    A scikit-learn classifier served through pyfunc answers labels, and an AUC over hard
    labels is a different, coarser number than the one the training run logged: ranking
    metrics are computed from `predict_proba` wherever the wrapped model offers it."""
    try:
        raw = model.get_raw_model()
    except Exception:  # a PythonModel (e.g. a fine-tuned transformer) is reached another way
        try:
            raw = model.unwrap_python_model()
        except Exception:  # not every flavor exposes its model
            return None
    predict_proba = getattr(raw, "predict_proba", None)
    return predict_proba(features) if callable(predict_proba) else None


def _score(
    model: Any, features: Any, labels: Any, metrics: list[str], who: str
) -> dict[str, float]:
    try:
        predictions = model.predict(features)
        scores = _class_scores(model, features) if SCORE_METRICS & set(metrics) else None
    except Exception as exc:
        raise ValidationError(
            f"the {who} failed on the holdout: {type(exc).__name__}: {exc}"[:2000],
            field="holdout",
            rule="predictable",
        ) from None
    return {
        name: compute(
            name, labels, scores if name in SCORE_METRICS and scores is not None else predictions
        )
        for name in metrics
    }


def evaluate(gate: Gate, registry: Registry, model: str, version: str | int) -> Decision:
    """Judge version `version` of `model` by `gate` (writes nothing: the caller records it).

    Raises ValidationError when the candidate cannot be judged at all: no holdout, no label,
    a label missing from the holdout, or a candidate that fails on it.
    """
    where = f"gates.{gate.model}"
    candidate = registry.version(model, version)
    champion = registry.alias(model, CHAMPION)
    if champion == candidate.version:
        # The alias moved but the decision was never recorded (the store failed): the version
        # is judged again against the champion the history knows.
        recorded = registry.recorded(model, CHAMPION)
        champion = recorded if recorded != candidate.version else None
    label = gate.label or candidate.label
    holdout_ref = gate.holdout or candidate.holdout_uri
    if not holdout_ref:
        raise ValidationError(
            f"version {candidate.version} was registered without a holdout and the gate names none",
            field=f"{where}.holdout",
            rule="required",
        )
    if not label:
        raise ValidationError(
            "no label: give the gate one or register the version with one",
            field=f"{where}.label",
            rule="required",
        )
    rules = gate.rules()
    needed = list(dict.fromkeys([gate.metric, *(r.metric for r in rules)]))
    evidence: dict[str, Any] = {
        "gate": gate.to_json(),
        "metric": gate.metric,
        "direction": gate.direction,
        "min_gain": gate.min_gain,
        "candidate_version": candidate.version,
        "champion_version": champion if champion != candidate.version else None,
    }
    with tempfile.TemporaryDirectory(prefix="eventops-gate-") as tmp:
        table = load_holdout(registry, holdout_ref, tmp)
        if label not in table.columns:
            raise ValidationError(
                f"label {label!r} is not a column of the holdout {holdout_ref}",
                field=f"{where}.label",
                rule="in-holdout",
            )
        features, labels = table.drop(columns=[label]), table[label].to_numpy()
        evidence["holdout"] = {"uri": holdout_ref, "rows": len(table), "label": label}
        loaded = registry.load_pyfunc(model, candidate.version, f"{tmp}/candidate")
        scores = _score(loaded, features, labels, needed, "candidate")
        champion_score = None
        if champion is not None and champion != candidate.version:
            try:
                old = registry.load_pyfunc(model, champion, f"{tmp}/champion")
                champion_score = _score(old, features, labels, [gate.metric], "champion")
            except ValidationError as exc:
                evidence["champion_error"] = exc.message
    value = scores[gate.metric]
    evidence["candidate"] = _finite(value)
    evidence["candidate_metrics"] = {k: _finite(v) for k, v in scores.items()}
    guardrails = {
        r.metric: {
            "rule": str(r),
            "value": _finite(scores[r.metric]),
            "pass": r.passes(scores[r.metric]),
        }
        for r in rules
    }
    evidence["guardrails"] = guardrails
    failed = [name for name, g in guardrails.items() if not g["pass"]]
    reasons = [f"guardrail {name} {guardrails[name]['rule']} failed" for name in failed]
    if champion_score is None:
        evidence.update(champion=None, gain=None)
        if champion is None or champion == candidate.version:
            reasons.insert(0, "no champion yet: nothing to compare with")
        else:
            reasons.insert(0, f"champion {champion} cannot score this holdout: not compared")
        passed = not failed and math.isfinite(value)
        if not math.isfinite(value):
            reasons.append(f"{gate.metric} is undefined on this holdout")
    else:
        old_value = champion_score[gate.metric]
        gain = value - old_value if gate.direction == MAXIMIZE else old_value - value
        evidence.update(champion=_finite(old_value), gain=_finite(gain))
        gained = math.isfinite(gain) and gain >= gate.min_gain
        passed = gained and not failed
        verdict = ">=" if gained else "<"
        reasons.insert(
            0, f"{gate.metric} gain {gain:.6g} {verdict} min_gain {gate.min_gain:g} "
            f"(candidate {value:.6g}, champion {champion} {old_value:.6g})",
        )  # fmt: skip
    outcome: Outcome = "rejected"
    if passed:
        outcome = "approval_requested" if gate.manual_approval else "promoted"
        if gate.manual_approval:
            reasons.append("manual approval required")
    evidence["manual_approval"] = gate.manual_approval
    evidence["reason"] = "; ".join(reasons)
    return Decision(model, candidate.version, outcome, evidence)
