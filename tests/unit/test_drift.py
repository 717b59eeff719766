"""The drift engine: measures against scipy and hand computation, verdicts on seeded data,
the multiple-testing correction, edge cases, quality checks and the report formats."""

from __future__ import annotations

import json
import math
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from eventops.errors import ValidationError
from eventops.monitoring import (
    CategoricalProfile,
    DataProfile,
    DriftReport,
    NumericProfile,
    check_quality,
    drift_report,
)
from eventops.monitoring.measures import (
    PSI_EPSILON,
    categorical_measures,
    chi_square,
    jensen_shannon,
    numeric_measures,
    psi,
)
from eventops.monitoring.profile import GRID_POINTS

SHIFTED_NUMERIC = ["x0", "x5", "x14"]
SHIFTED_CATEGORICAL = ["c0"]
MIX = ["a", "b", "c", "d"]


def numeric(values: np.ndarray) -> NumericProfile:
    return NumericProfile.of(np.asarray(values, dtype=np.float64))


def frames(rows: int, seed: int, shift: bool) -> pa.Table:
    """20 numeric columns of four shapes (normal, exponential, uniform, Poisson counts with
    ties) and 5 categorical; with `shift`, a 0.3-sd mean shift on x0, x5, x14 and a new
    category mix on c0."""
    rng = np.random.default_rng(seed)
    columns: dict[str, np.ndarray] = {}
    for i in range(20):
        delta = 0.3 if shift and f"x{i}" in SHIFTED_NUMERIC else 0.0
        shape = i % 4
        if shape == 0:
            columns[f"x{i}"] = rng.normal(10 + delta * 2, 2, rows)  # sd 2
        elif shape == 1:
            columns[f"x{i}"] = rng.exponential(1.0, rows) + delta  # sd 1
        elif shape == 2:
            columns[f"x{i}"] = rng.uniform(0, 1, rows) + delta * math.sqrt(1 / 12)
        else:
            columns[f"x{i}"] = rng.poisson(5, rows).astype(np.int64)
    for j in range(5):
        changed = shift and f"c{j}" in SHIFTED_CATEGORICAL
        shares = [0.2, 0.3, 0.2, 0.3] if changed else [0.4, 0.3, 0.2, 0.1]
        columns[f"c{j}"] = rng.choice(MIX, size=rows, p=shares)
    return pa.table(columns)


# ------------------------------------------------------------------ measures
def test_ks_matches_scipy_exactly_on_small_samples_with_ties() -> None:
    rng = np.random.default_rng(1)
    a = np.round(rng.normal(0, 1, 300), 1)  # ties on both sides
    b = np.round(rng.normal(0.2, 1, 500), 1)
    found = numeric_measures(numeric(a), numeric(b))
    expected = stats.ks_2samp(a, b)
    assert found.ks == pytest.approx(expected.statistic, abs=1e-12)
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-9)


def test_ks_p_value_follows_scipy_at_larger_sizes() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 40_000), rng.normal(0.04, 1, 5_000)  # n*m/(n+m) = 4,444: kstwo
    found = numeric_measures(numeric(a), numeric(b))
    expected = stats.ks_2samp(a, b)
    assert found.ks == pytest.approx(expected.statistic, abs=1e-12)
    assert found.p_value == pytest.approx(expected.pvalue, rel=1e-9)
    a, b = rng.normal(0, 1, 30_000), rng.normal(0.015, 1, 30_000)  # 15,000: the limit
    found = numeric_measures(numeric(a), numeric(b))
    expected = stats.ks_2samp(a, b)
    assert found.ks == pytest.approx(expected.statistic, abs=1e-12)
    assert 1e-6 < expected.pvalue < 0.9
    assert found.p_value == pytest.approx(expected.pvalue, rel=3e-2)


def test_grid_profiles_stay_within_their_bound_of_scipy() -> None:
    rng = np.random.default_rng(3)
    # zero-inflated: an atom at 0 holding 30% of the values, then a continuous tail
    a = np.where(rng.uniform(size=300_000) < 0.3, 0.0, rng.normal(1, 1, 300_000))
    b = np.where(rng.uniform(size=200_000) < 0.3, 0.0, rng.normal(1.01, 1, 200_000))
    ref, cur = numeric(a), numeric(b)
    assert not ref.exact and not cur.exact
    found = numeric_measures(ref, cur)
    expected = stats.ks_2samp(a, b)
    assert abs(found.ks - expected.statistic) <= 2 / GRID_POINTS
    assert found.p_value == pytest.approx(expected.pvalue, rel=0.1)
    wasserstein = stats.wasserstein_distance(a, b) / a.std()
    assert found.wasserstein == pytest.approx(wasserstein, rel=3e-3)
    edges = np.array([-1.0, 0.0, 0.5, 1.0, 3.0])
    assert np.allclose(ref.cdf(edges), [np.mean(a <= e) for e in edges], atol=2 / GRID_POINTS)


def test_wasserstein_matches_scipy_on_exact_profiles() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.exponential(2, 2_000), rng.exponential(2.5, 3_000)
    found = numeric_measures(numeric(a), numeric(b))
    assert found.wasserstein == pytest.approx(stats.wasserstein_distance(a, b) / a.std(), rel=1e-9)


def test_psi_by_hand() -> None:
    # bins at the reference median 2: (-inf, 2], (2, inf); shares 1/2, 1/2 against 3/4, 1/4
    expected = 0.25 * math.log(1.5) + (-0.25) * math.log(0.5)
    assert psi(numeric([1, 2, 3, 4]), numeric([1, 1, 1, 3]), bins=2) == pytest.approx(expected)
    # every current value above the reference: the empty bin takes PSI_EPSILON
    empty = (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5) + 0.5 * math.log(1 / 0.5)
    assert psi(numeric([1, 2, 3, 4]), numeric([10, 10]), bins=2) == pytest.approx(empty)


def test_psi_against_deciles_counted_with_numpy() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(0, 1, 5_000), rng.normal(0.3, 1.2, 4_000)
    edges = np.unique(np.quantile(a, np.arange(1, 10) / 10, method="inverted_cdf"))
    shares = [
        np.bincount(np.searchsorted(edges, x, side="left"), minlength=len(edges) + 1) / len(x)
        for x in (a, b)
    ]
    expected = float(np.sum((shares[1] - shares[0]) * np.log(shares[1] / shares[0])))
    assert psi(numeric(a), numeric(b)) == pytest.approx(expected, rel=1e-12)


def test_chi_square_and_js_match_scipy_with_an_unseen_category() -> None:
    ref = CategoricalProfile.of({"a": 400, "b": 300, "c": 300})
    cur = CategoricalProfile.of({"a": 300, "b": 300, "c": 250, "new": 150})
    found = categorical_measures(ref, cur)
    table = np.array([[400, 300, 300, 0], [300, 300, 250, 150]])
    statistic, p, dof, _ = stats.chi2_contingency(table[:, [0, 1, 2, 3]], correction=False)
    assert (found.chi2, found.dof) == (pytest.approx(statistic), dof)
    assert found.p_value == pytest.approx(p, rel=1e-9)
    assert found.js == pytest.approx(jensenshannon(table[0], table[1], base=2), rel=1e-9)


def test_chi_square_pools_rare_categories() -> None:
    ref = np.array([500.0, 480.0, 2.0, 1.0])
    cur = np.array([510.0, 470.0, 0.0, 3.0])
    statistic, p, dof = chi_square(ref, cur)
    pooled = np.array([[500, 480, 3], [510, 470, 3]])
    expected = stats.chi2_contingency(pooled, correction=False)
    assert dof == 2
    assert statistic == pytest.approx(expected.statistic)
    assert p == pytest.approx(expected.pvalue)


def test_js_distance_bounds() -> None:
    assert jensen_shannon(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(0.0)
    assert jensen_shannon(np.array([5.0, 0.0]), np.array([0.0, 7.0])) == pytest.approx(1.0)


# ------------------------------------------------------------------ verdicts
def test_shifted_columns_are_flagged_and_the_others_are_not() -> None:
    report = drift_report(frames(20_000, 10, False), frames(20_000, 11, True))
    assert report.drifted_columns == SHIFTED_NUMERIC + SHIFTED_CATEGORICAL
    assert report.dataset_drifted and report.tests == 25
    assert report.share_drifted == pytest.approx(4 / 25)
    by_name = {c.name: c for c in report.columns}
    assert by_name["x0"].alpha == pytest.approx(0.05 / 25)
    assert by_name["x0"].effect == pytest.approx(0.3, abs=0.05)  # Wasserstein in reference sds
    assert by_name["x0"].psi is not None and by_name["x0"].psi < 0.1  # PSI alone would miss it
    assert by_name["c0"].method == "chi2" and by_name["c0"].effect_name == "jensen_shannon"
    assert by_name["x3"].kind == "numeric"  # Poisson counts with ties
    assert not report.skipped and report.reference_rows == report.current_rows == 20_000


def test_no_drift_between_two_samples_of_one_distribution() -> None:
    report = drift_report(frames(20_000, 12, False), frames(20_000, 13, False))
    assert report.drifted_columns == [] and not report.dataset_drifted


def test_bonferroni_reduces_false_alarms() -> None:
    rng = np.random.default_rng(20)
    names = [f"u{i}" for i in range(50)]
    ref = pa.table({n: rng.normal(0, 1, 1_000) for n in names})
    cur = pa.table({n: rng.normal(0, 1, 1_000) for n in names})
    plain = drift_report(ref, cur, correction="none")
    corrected = drift_report(ref, cur)
    assert plain.tests == corrected.tests == 50
    assert len(plain.drifted_columns) >= 2  # about 50 x 0.05 = 2.5 expected
    assert corrected.drifted_columns == []
    assert all(c.alpha == pytest.approx(0.001) for c in corrected.columns)


def test_large_samples_need_a_material_shift() -> None:
    rng = np.random.default_rng(21)
    ref = pa.table({"x": rng.normal(0, 1, 200_000)})
    cur = pa.table({"x": rng.normal(0.03, 1, 200_000)})  # significant, 0.03 sd
    report = drift_report(ref, cur)
    (column,) = report.columns
    assert column.p_value is not None and column.p_value < 1e-6
    assert not column.drifted and "not material" in column.reason
    (column,) = drift_report(ref, cur, large_sample=10**9).columns
    assert column.drifted and "small sample" in column.reason


def test_nulls_are_counted_and_left_out() -> None:
    rng = np.random.default_rng(22)
    a, b = rng.normal(0, 1, 800), rng.normal(0, 1, 900)
    ref = pa.table({"x": pa.array(list(a) + [None] * 10 + [float("nan")] * 5, pa.float64())})
    cur = pa.table({"x": pa.array(list(b) + [None] * 100, pa.float64())})
    (column,) = drift_report(ref, cur).columns
    assert (column.reference_count, column.reference_nulls) == (800, 15)
    assert (column.current_count, column.current_nulls) == (900, 100)
    assert column.statistic == pytest.approx(stats.ks_2samp(a, b).statistic)
    categories = pa.table({"c": ["a", None, "b", None]})
    (column,) = drift_report(categories, pa.table({"c": ["a", "b", "b", None]})).columns
    assert (column.reference_nulls, column.current_nulls, column.current_count) == (2, 1, 3)


def test_constant_columns() -> None:
    same = drift_report(pa.table({"k": [3.0] * 100}), pa.table({"k": [3.0] * 120}))
    (column,) = same.columns
    assert not column.drifted and column.p_value == pytest.approx(1.0) and column.effect == 0
    moved = drift_report(pa.table({"k": [3.0] * 100}), pa.table({"k": [4.0] * 100}))
    (column,) = moved.columns
    assert column.drifted and column.statistic == 1.0
    assert column.effect is not None and math.isfinite(column.effect)


def test_empty_current_is_reported_not_tested() -> None:
    ref = frames(1_000, 30, False)
    report = drift_report(ref, ref.slice(0, 0))
    assert report.tests == 0 and not report.dataset_drifted
    assert all(c.reason == "not tested: no current values" for c in report.columns)
    assert [f.check for f in check_quality(ref, ref.slice(0, 0))] == ["empty"]


def test_all_unseen_categories() -> None:
    ref = pa.table({"c": ["a"] * 60 + ["b"] * 40})
    cur = pa.table({"c": ["x"] * 50 + ["y"] * 50})
    (column,) = drift_report(ref, cur).columns
    assert column.drifted and column.effect == pytest.approx(1.0)
    assert column.p_value is not None and column.p_value < 1e-30
    (finding,) = check_quality(ref, cur)
    assert (finding.check, finding.value) == ("unseen_category", 1.0)


def test_methods_by_column() -> None:
    ref, cur = frames(2_000, 40, False), frames(2_000, 41, True)
    report = drift_report(ref, cur, methods={"x0": "psi", "x1": "wasserstein", "c0": "js"})
    by_name = {c.name: c for c in report.columns}
    assert report.tests == 22  # effect-only methods take no share of alpha
    assert by_name["x0"].p_value is None and by_name["x0"].effect_name == "psi"
    assert by_name["x0"].drifted is (by_name["x0"].effect >= 0.2)  # type: ignore[operator]
    assert by_name["c0"].drifted and by_name["c0"].threshold == 0.1
    with pytest.raises(ValidationError) as error:
        drift_report(ref, cur, methods={"c0": "ks"})
    assert (error.value.field, error.value.rule) == ("methods", "method")


def test_prediction_drift_is_its_own_family() -> None:
    rng = np.random.default_rng(42)
    ref = pa.table({"x": rng.normal(0, 1, 1_000), "score": rng.uniform(0, 1, 1_000)})
    cur = pa.table({"x": rng.normal(0, 1, 1_000), "score": rng.uniform(0.2, 1.2, 1_000)})
    report = drift_report(ref, cur, prediction_column="score")
    assert [c.name for c in report.columns] == ["x"] and report.tests == 1
    assert report.prediction is not None and report.prediction.drifted
    assert report.prediction.alpha == 0.05
    assert not report.dataset_drifted and report.drift_detected


def test_pandas_frames_and_declared_categorical_ints() -> None:
    ref, cur = frames(3_000, 50, False), frames(3_000, 51, True)
    from_tables = drift_report(ref, cur, categorical=["x3"])
    from_pandas = drift_report(ref.to_pandas(), cur.to_pandas(), categorical=["x3"])
    assert from_pandas.drifted_columns == from_tables.drifted_columns
    x3 = next(c for c in from_pandas.columns if c.name == "x3")
    assert (x3.kind, x3.method) == ("categorical", "chi2")
    frame = pd.DataFrame({"plan": pd.Categorical(["a", "b", "a"]), "flag": [True, False, True]})
    assert [c.kind for c in drift_report(frame, frame).columns] == ["categorical"] * 2


def test_untestable_and_missing_columns_are_skipped() -> None:
    when = [datetime(2026, 1, 1)] * 3
    ref = pa.table({"t": when, "x": [1.0, 2.0, 3.0], "gone": [1, 2, 3]})
    cur = pa.table({"t": when, "x": ["1", "2", "3"]})
    report = drift_report(ref, cur)
    assert report.columns == []
    assert report.skipped == {
        "t": "type timestamp[us] is not tested",
        "x": "type string cannot be compared as numeric",
        "gone": "missing from the current data",
    }


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"alpha": 0.0}, "alpha"),
        ({"correction": "holm"}, "correction"),
        ({"columns": ["nope"]}, "columns"),
        ({"prediction_column": "nope"}, "prediction_column"),
        ({"js_threshold": -1}, "js_threshold"),
        ({"categorical": ["nope"]}, "categorical"),
    ],
)
def test_bad_arguments_name_their_field(kwargs: dict[str, object], field: str) -> None:
    table = pa.table({"x": [1.0, 2.0]})
    with pytest.raises(ValidationError) as error:
        drift_report(table, table, **kwargs)  # type: ignore[arg-type]
    assert error.value.field == field


def test_a_reference_profile_is_reused() -> None:
    ref, cur = frames(5_000, 60, False), frames(5_000, 61, True)
    profile = DataProfile.of(ref)
    assert drift_report(profile, cur).drifted_columns == drift_report(ref, cur).drifted_columns


# ------------------------------------------------------------------ quality
def test_quality_schema_findings() -> None:
    ref = pa.table({"a": [1, 2], "b": [1.0, 2.0], "c": ["x", "y"]})
    cur = pa.table({"a": [1.0, 2.0], "c": ["x", "y"], "d": [True, False]})
    found = {(f.column, f.check): f for f in check_quality(ref, cur)}
    assert set(found) == {("b", "missing_column"), ("a", "type_change"), ("d", "new_column")}
    assert (found["a", "type_change"].value, found["a", "type_change"].threshold) == (
        "double",
        "int64",
    )


def test_quality_null_rate() -> None:
    ref = pa.table({"x": [1.0] * 95 + [None] * 5})
    cur = pa.table({"x": [1.0] * 80 + [None] * 20})
    (finding,) = check_quality(ref, cur)
    assert (finding.check, finding.value, finding.threshold) == ("null_rate", 0.2, 0.1)
    assert check_quality(ref, cur, null_increase=0.2) == []


def test_quality_out_of_range() -> None:
    ref = pa.table({"x": np.linspace(0, 100, 1_001)})  # widened by 10%: [-10, 110]
    cur = pa.table({"x": np.r_[np.linspace(0, 100, 990), [-11.0] * 4, [110.0, 111.0] * 3]})
    (finding,) = check_quality(ref, cur)
    assert finding.check == "out_of_range"
    assert finding.value == pytest.approx(7 / 1_000)  # -11 x4, 111 x3; 110 is inside
    assert "7 value(s)" in finding.message
    assert check_quality(ref, cur, max_out_of_range=0.01) == []


def test_quality_unseen_category_lists_them() -> None:
    ref = pa.table({"c": ["a", "b"] * 50})
    cur = pa.table({"c": ["a"] * 90 + ["z"] * 6 + ["y"] * 4})
    (finding,) = check_quality(ref, cur)
    assert (finding.check, finding.value) == ("unseen_category", 0.1)
    assert "'z', 'y'" in finding.message


def test_quality_is_quiet_on_the_same_distribution() -> None:
    assert check_quality(frames(5_000, 70, False), frames(5_000, 71, False)) == []


# ------------------------------------------------------------------ report formats
def test_report_json_round_trip() -> None:
    ref, cur = frames(2_000, 80, False), frames(2_000, 81, True)
    report = drift_report(ref.append_column("when", pa.array([datetime(2026, 1, 1)] * 2_000)), cur)
    report.quality = check_quality(ref, cur)
    text = report.to_json()
    again = DriftReport.from_json(text)
    assert again.to_dict() == report.to_dict() == json.loads(text)
    assert again.columns == report.columns and again.quality == report.quality
    assert json.loads(text)["drifted_columns"] == report.drifted_columns


def test_html_page_holds_the_table_and_escapes_names() -> None:
    ref = pa.table({"<b>x</b>": np.arange(100.0), "c": ["a"] * 100})
    cur = pa.table({"<b>x</b>": np.arange(100.0) + 50, "c": ["a"] * 50 + ["new"] * 50})
    report = drift_report(ref, cur)
    report.quality = check_quality(ref, cur)
    page = report.to_html()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "<table>" in page and page.count("<tr>") >= 3 and "<svg" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "unseen_category" in page
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_values_near_the_float_limit_are_measured_not_overflowed() -> None:
    x = np.linspace(-1.0, 1.0, 100)
    for method in ("ks", "psi", "wasserstein"):
        small = drift_report(
            pd.DataFrame({"a": x}), pd.DataFrame({"a": x / 2}), methods={"a": method}
        ).columns[0]
        huge = drift_report(
            pd.DataFrame({"a": x * 1.7e308}),
            pd.DataFrame({"a": x * 0.85e308}),
            methods={"a": method},
        ).columns[0]
        assert huge.drifted and small.drifted
        assert huge.statistic == pytest.approx(small.statistic)
        assert huge.effect == pytest.approx(small.effect)


def test_rare_new_categories_are_not_pooled_away() -> None:
    """Every value rare on both sides and the two sides disjoint: one pooled cell would say
    p = 1 while the Jensen-Shannon distance is 1."""
    reference = pd.DataFrame({"a": [f"r{i}" for i in range(100)]})
    current = pd.DataFrame({"a": [f"c{i}" for i in range(100)]})
    column = drift_report(reference, current).columns[0]
    assert column.effect == pytest.approx(1.0)
    assert column.drifted and column.p_value is not None and column.p_value < 1e-10
    same = drift_report(reference, reference.sample(frac=1, random_state=1)).columns[0]
    assert not same.drifted
