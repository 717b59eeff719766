"""How a trained model becomes an MLflow model folder: which flavor, which signature.

scikit-learn estimators are saved with the `sklearn` flavor and cloudpickle: MLflow 3 defaults
to skops, which refuses common estimators (a RandomForest's trees) at save time. Anything else
must be an `mlflow.pyfunc.PythonModel`. The signature comes from the input example and the
model's own output on it, so serving can check requests against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventops.errors import ValidationError

FLAVORS = ("sklearn", "pyfunc")


def _is_estimator(model: Any) -> bool:
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # without scikit-learn nothing is an estimator
        return False
    return isinstance(model, BaseEstimator)


def detect_flavor(model: Any, flavor: str | None) -> str:
    import mlflow.pyfunc

    if flavor is not None and flavor not in FLAVORS:
        raise ValidationError(
            f"flavor {flavor!r}: one of {', '.join(FLAVORS)}", field="flavor", rule="known-flavor"
        )
    if isinstance(model, mlflow.pyfunc.PythonModel):
        found = "pyfunc"
    else:
        found = "sklearn" if _is_estimator(model) else ""
    if not found or (flavor is not None and flavor != found):
        raise ValidationError(
            f"cannot register a {type(model).__name__} as {flavor or 'a model'}: give a "
            "scikit-learn estimator or an mlflow.pyfunc.PythonModel",
            field="model",
            rule="supported-type",
        )
    return found


def save_model(
    model: Any,
    flavor: str,
    path: str,
    example: Any,
    predict_fn: str,
    pip_requirements: Sequence[str] | None,
) -> None:
    """Save with a signature from the input example; a model that cannot predict its own
    example is refused here rather than at serving time."""
    import mlflow.pyfunc
    import mlflow.sklearn
    from mlflow.models import Model, infer_signature

    reqs = list(pip_requirements) if pip_requirements is not None else None
    try:
        if flavor == "sklearn":
            output = getattr(model, predict_fn)(example)
            mlflow.sklearn.save_model(
                model,
                path,
                serialization_format="cloudpickle",  # skops refuses common estimators
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=reqs,
                pyfunc_predict_fn=predict_fn,
            )
        else:
            mlflow.pyfunc.save_model(
                path, python_model=model, input_example=example, pip_requirements=reqs
            )
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise ValidationError(
            f"the model cannot predict its input example: {type(exc).__name__}: {exc}",
            field="input_example",
            rule="predictable",
        ) from None
    if Model.load(path).signature is None:
        raise ValidationError(
            "no signature could be inferred: the model failed on its input example",
            field="input_example",
            rule="predictable",
        )
