"""Data drift: has each column of a current window moved away from its reference?

`drift_report(reference, current)` profiles both sides column by column (each column read and
sorted once, on as many threads as there are CPUs; see `eventops.monitoring.profile`), compares
the profiles (`eventops.monitoring.measures`) and decides per column:

| kind | default method | verdict |
|---|---|---|
| numeric | `ks`: Kolmogorov-Smirnov | p < alpha/k; on large samples also a material shift |
| categorical | `chi2`: chi-square homogeneity | p < alpha/k; on large samples also JS >= `js_threshold` |

Numeric means integer, float or decimal; categorical means string, boolean, dictionary, or any
column named in `categorical` (integer codes). Other methods, per column through `methods`:
`psi`, `wasserstein` (numeric) and `js` (categorical) decide on the effect size alone, with no
p-value, as dashboards usually do.

**Why an effect size on large samples.** A test's power grows with the sample: with a million
rows on each side KS flags a shift of 0.007 standard deviations at p < 0.002, which nobody would
retrain a model for. So once both sides have at least `large_sample` values (5,000, where KS
starts to detect shifts below a tenth of a standard deviation) a column drifts only when the
test is significant *and* the shift is material: for a numeric column the Wasserstein distance
is at least `wasserstein_threshold` reference standard deviations (0.1) or the PSI at least
`psi_threshold` (0.2, the usual "major shift" mark); for a categorical column the Jensen-Shannon
distance is at least `js_threshold` (0.1). Below that size the test alone decides: small
samples cannot show small shifts, so a significant one is material. PSI alone is not used as
the gate: a 0.3-standard-deviation mean shift of a normal variable has a PSI of only ~0.08 (under
the 0.1 "minor" mark) while its Wasserstein distance is 0.3.

**Why Bonferroni.** Testing 25 unshifted columns at 0.05 each raises a false alarm on at least
one of them 72% of the time. Bonferroni tests each of the k columns that get a p-value at
alpha/k, so the chance of any false alarm stays under alpha whatever the dependence between
columns; it costs power only for shifts near the detection limit, which the effect-size rule
above would not call material anyway. `correction="none"` tests each column at alpha. The
prediction column (`prediction_column`) is its own family of one, tested at alpha.

A column with no values on one side is reported, not tested (the quality checks flag it).
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from eventops.errors import ValidationError
from eventops.monitoring.measures import (
    CategoricalMeasures,
    NumericMeasures,
    categorical_measures,
    numeric_measures,
)
from eventops.monitoring.profile import (
    CategoricalProfile,
    ColumnProfile,
    DataProfile,
    NumericProfile,
)
from eventops.monitoring.report import ColumnDrift, DriftReport

__all__ = ["ColumnDrift", "DriftReport", "drift_report"]

METHODS = {"numeric": ("ks", "psi", "wasserstein"), "categorical": ("chi2", "js")}
DEFAULT_METHODS = {"numeric": "ks", "categorical": "chi2"}
CORRECTIONS = ("bonferroni", "none")
LARGE_SAMPLE = 5_000
WASSERSTEIN_THRESHOLD = 0.1
Measures = NumericMeasures | CategoricalMeasures


def drift_report(
    reference: Any,
    current: Any,
    *,
    columns: Iterable[str] | None = None,
    categorical: Collection[str] | None = None,
    methods: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    correction: str = "bonferroni",
    psi_threshold: float = 0.2,
    js_threshold: float = 0.1,
    prediction_column: str | None = None,
    wasserstein_threshold: float = WASSERSTEIN_THRESHOLD,
    large_sample: int = LARGE_SAMPLE,
    workers: int | None = None,
) -> DriftReport:
    """Compare `current` with `reference`: pyarrow Tables, pandas DataFrames, ColumnSources,
    or `DataProfile`s (a reference profiled once and reused for every window)."""
    started = time.perf_counter()
    _check_arguments(alpha, correction, psi_threshold, js_threshold, wasserstein_threshold)
    wanted = None if columns is None else list(dict.fromkeys(columns))
    extra = [prediction_column] if prediction_column else []
    ref = (
        reference
        if isinstance(reference, DataProfile)
        else DataProfile.of(
            reference,
            columns=None if wanted is None else wanted + extra,
            categorical=set(categorical or ()),
            field="reference",
            workers=workers,
        )
    )
    named = [
        *((n, "columns") for n in wanted or []),
        *((n, "prediction_column") for n in extra),
        *((n, "categorical") for n in categorical or ()),
    ]
    for name, where in named:
        if name not in ref.types:
            raise ValidationError(
                f"no column {name!r} in the reference", field=where, rule="exists"
            )
    features = [n for n in (wanted if wanted is not None else ref.types) if n not in extra]
    cur = (
        current
        if isinstance(current, DataProfile)
        else DataProfile.of(
            current,
            columns=[n for n in [*features, *extra] if n in ref.columns],
            kinds=ref.kinds(),
            field="current",
            workers=workers,
        )
    )
    chosen = _methods(methods or {}, ref, [*features, *extra])
    skipped: dict[str, str] = {}
    measured: dict[str, tuple[ColumnProfile, ColumnProfile, Measures | None]] = {}
    for name in [*features, *extra]:
        why = _why_skipped(name, ref, cur)
        if why:
            skipped[name] = why
            continue
        before, after = ref.columns[name], cur.columns[name]
        measured[name] = (before, after, _measure(before, after))
    tests = sum(
        1
        for name, (_, _, found) in measured.items()
        if name not in extra and found is not None and chosen[name] in ("ks", "chi2")
    )
    per_test = alpha / tests if correction == "bonferroni" and tests else alpha
    limits = {"psi": psi_threshold, "js": js_threshold, "wasserstein": wasserstein_threshold}
    verdicts = {
        name: _verdict(
            name,
            chosen[name],
            before,
            after,
            found,
            alpha if name in extra else per_test,
            limits,
            large_sample,
        )
        for name, (before, after, found) in measured.items()
    }
    return DriftReport(
        columns=[verdicts[n] for n in features if n in verdicts],
        prediction=verdicts.get(prediction_column) if prediction_column else None,
        skipped=skipped,
        alpha=alpha,
        correction=correction,
        tests=tests,
        reference_rows=ref.rows,
        current_rows=cur.rows,
        elapsed_seconds=time.perf_counter() - started,
    )


def _check_arguments(
    alpha: float, correction: str, psi_t: float, js_t: float, wasserstein_t: float
) -> None:
    if not 0 < alpha < 1:
        raise ValidationError(f"must be between 0 and 1, got {alpha}", field="alpha", rule="range")
    if correction not in CORRECTIONS:
        raise ValidationError(
            f"must be one of {', '.join(CORRECTIONS)}, got {correction!r}",
            field="correction",
            rule="one-of",
        )
    for name, value in (
        ("psi_threshold", psi_t),
        ("js_threshold", js_t),
        ("wasserstein_threshold", wasserstein_t),
    ):
        if value < 0:
            raise ValidationError(f"must be >= 0, got {value}", field=name, rule="range")


def _methods(methods: Mapping[str, str], ref: DataProfile, names: list[str]) -> dict[str, str]:
    for name, method in methods.items():
        if name not in names:
            raise ValidationError(
                f"{name!r} is not a compared column", field="methods", rule="column"
            )
        profile = ref.columns.get(name)
        if profile is not None and method not in METHODS[profile.kind]:
            raise ValidationError(
                f"{method!r} does not apply to {profile.kind} column {name!r} "
                f"(use one of {', '.join(METHODS[profile.kind])})",
                field="methods",
                rule="method",
            )
    return {
        name: methods.get(name) or DEFAULT_METHODS[ref.columns[name].kind]
        for name in names
        if name in ref.columns
    }


def _why_skipped(name: str, ref: DataProfile, cur: DataProfile) -> str | None:
    if name not in ref.columns:
        return ref.skipped.get(name, "not in the reference profile")
    if name not in cur.types:
        return "missing from the current data"
    if name not in cur.columns:
        return cur.skipped.get(name, "not in the current profile")
    return None


def _measure(
    before: NumericProfile | CategoricalProfile, after: NumericProfile | CategoricalProfile
) -> NumericMeasures | CategoricalMeasures | None:
    if before.count == 0 or after.count == 0:
        return None
    if isinstance(before, NumericProfile) and isinstance(after, NumericProfile):
        return numeric_measures(before, after)
    if isinstance(before, CategoricalProfile) and isinstance(after, CategoricalProfile):
        return categorical_measures(before, after)
    raise TypeError(f"profiles of different kinds for {before!r} and {after!r}")


EFFECT_NAMES = {"psi": "psi", "wasserstein": "wasserstein", "js": "jensen_shannon"}


def _verdict(
    name: str,
    method: str,
    before: ColumnProfile,
    after: ColumnProfile,
    found: Measures | None,
    alpha: float,
    limits: Mapping[str, float],
    large_sample: int,
) -> ColumnDrift:
    effect_name = EFFECT_NAMES.get(
        method, "wasserstein" if before.kind == "numeric" else "jensen_shannon"
    )
    threshold = limits["js" if effect_name == "jensen_shannon" else effect_name]
    statistic: float | None = None
    p_value: float | None = None
    level: float | None = None
    effect: float | None = None
    psi: float | None = None
    drifted = False
    if found is None:
        reason = f"not tested: no {'reference' if before.count == 0 else 'current'} values"
    else:
        if isinstance(found, NumericMeasures):
            psi, statistic = found.psi, found.ks
            effect = {"psi": found.psi}.get(effect_name, found.wasserstein)
        else:
            effect, statistic = found.js, found.chi2
        if method in ("ks", "chi2"):
            p_value, level = found.p_value, alpha
            drifted, reason = _tested(
                found.p_value,
                alpha,
                effect_name,
                effect,
                threshold,
                psi,
                limits["psi"],
                min(before.count, after.count) >= large_sample,
            )
        else:  # the effect size alone
            statistic, drifted = effect, effect >= threshold
            reason = f"{effect_name} {effect:.3g} {'>=' if drifted else '<'} {threshold:g}"
    return ColumnDrift(
        name=name,
        kind=before.kind,
        method=method,
        statistic=statistic,
        p_value=p_value,
        alpha=level,
        effect=effect,
        effect_name=effect_name,
        threshold=threshold,
        psi=psi,
        drifted=drifted,
        reason=reason,
        reference_count=before.count,
        current_count=after.count,
        reference_nulls=before.missing,
        current_nulls=after.missing,
    )


def _tested(
    p_value: float,
    alpha: float,
    effect_name: str,
    effect: float,
    threshold: float,
    psi: float | None,
    psi_threshold: float,
    large: bool,
) -> tuple[bool, str]:
    """(drifted, why) for a test: significance, and on a large sample a material effect."""
    significant = p_value < alpha
    reason = f"p {p_value:.3g} {'<' if significant else '>='} {alpha:.3g}"
    if not significant:
        return False, reason
    if not large:
        return True, reason + " (a small sample: the test decides)"
    checks = [(effect_name, effect, threshold)]
    if psi is not None:
        checks.append(("psi", psi, psi_threshold))
    reached = [f"{n} {v:.3g} >= {t:g}" for n, v, t in checks if v >= t]
    if reached:
        return True, f"{reason}; {reached[0]}"
    below = " and ".join(f"{n} {v:.3g} < {t:g}" for n, v, t in checks)
    return False, f"{reason} but {below}: significant, not material"
