from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from domain.canonical import canonical_json
from domain.drift import (
    DriftResult,
    DriftThresholds,
    FeatureKind,
    Verdict,
    analyze_drift,
    freeze_reference,
    kl_divergence,
    ks_two_sample,
    population_stability_index,
    reference_cut_points,
)

pytestmark = pytest.mark.unit

EPSILON = 1e-4


# --- an independent, deliberately plain implementation to check against ---------------------------


def plain_fractions(counts: Sequence[int]) -> list[float]:
    total = sum(counts)
    return [count / total if count else EPSILON for count in counts]


def plain_psi(reference: Sequence[int], current: Sequence[int]) -> float:
    r, c = plain_fractions(reference), plain_fractions(current)
    return sum((ri - ci) * math.log(ri / ci) for ri, ci in zip(r, c, strict=True))


def plain_kl(reference: Sequence[int], current: Sequence[int]) -> float:
    r, c = plain_fractions(reference), plain_fractions(current)
    r = [ri / sum(r) for ri in r]
    c = [ci / sum(c) for ci in c]
    return sum(ci * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))


def plain_bin_counts(values: Sequence[float], cut_points: Sequence[float]) -> list[int]:
    counts = [0] * (len(cut_points) + 1)
    for value in values:
        counts[bisect.bisect_right(cut_points, value)] += 1  # bins are left-closed
    return counts


def scipy_ks(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> tuple[float, float]:
    with warnings.catch_warnings():
        # scipy's exact path may fall back to the asymptotic one; ours returns the same value
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stats.ks_2samp(a, b)
    return float(result.statistic), float(result.pvalue)


def normal(seed: int, n: int, shift: float = 0.0, scale: float = 1.0) -> npt.NDArray[np.float64]:
    return np.random.default_rng(seed).normal(shift, scale, n)


# --- PSI and KL -----------------------------------------------------------------------------------

FIXED_COUNTS = [
    ([10, 20, 30, 40], [40, 30, 20, 10]),
    ([100, 100, 100], [100, 100, 100]),
    ([0, 5, 5], [5, 5, 0]),
    ([1, 0, 0, 0, 999], [0, 0, 1, 0, 999]),
    ([3, 7], [7000, 3000]),
    ([250, 250, 250, 250, 0], [10, 20, 30, 40, 900]),
]


@pytest.mark.parametrize(("reference", "current"), FIXED_COUNTS)
def test_psi_and_kl_match_the_plain_implementation(
    reference: list[int], current: list[int]
) -> None:
    assert population_stability_index(reference, current, EPSILON) == pytest.approx(
        plain_psi(reference, current), rel=1e-12, abs=1e-15
    )
    assert kl_divergence(reference, current, EPSILON) == pytest.approx(
        plain_kl(reference, current), rel=1e-12, abs=1e-15
    )


def test_psi_of_a_known_case() -> None:
    # by hand: (0.5 - 0.25) ln 2 + (0.5 - 0.75) ln(2/3) = 0.25 ln 3
    assert population_stability_index([1, 1], [1, 3]) == pytest.approx(0.25 * math.log(3))


counts = st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12)


@st.composite
def count_pairs(draw: st.DrawFn) -> tuple[list[int], list[int]]:
    reference = draw(counts.filter(lambda c: sum(c) > 0))
    current = draw(
        st.lists(
            st.integers(min_value=0, max_value=10_000),
            min_size=len(reference),
            max_size=len(reference),
        ).filter(lambda c: sum(c) > 0)
    )
    return reference, current


@given(count_pairs())
def test_psi_and_kl_invariants(pair: tuple[list[int], list[int]]) -> None:
    reference, current = pair
    psi = population_stability_index(reference, current)
    assert psi >= 0
    assert population_stability_index(current, reference) == psi  # exactly symmetric
    assert population_stability_index(reference, reference) == 0
    assert psi == pytest.approx(plain_psi(reference, current), rel=1e-9, abs=1e-12)
    kl = kl_divergence(reference, current)
    assert kl >= 0
    assert kl == pytest.approx(max(0.0, plain_kl(reference, current)), rel=1e-9, abs=1e-12)
    assert kl_divergence(reference, reference) == pytest.approx(0, abs=1e-15)


@pytest.mark.parametrize(
    ("reference", "current"), [([], []), ([1, 2], [1]), ([0, 0], [1, 1]), ([-1, 2], [1, 1])]
)
def test_counts_are_validated(reference: list[int], current: list[int]) -> None:
    with pytest.raises(ValueError, match="counts"):
        population_stability_index(reference, current)


# --- bins -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [12_345, 1000, 7])
def test_cut_points_are_the_reference_deciles(n: int) -> None:
    values = normal(1, n).tolist()
    ordered = sorted(values)
    cuts = reference_cut_points(np.sort(np.array(values)), 10)
    assert cuts == tuple(sorted({ordered[k * n // 10] for k in range(1, 10)} - {ordered[0]}))
    if n >= 10:  # every bin holds a tenth of the reference
        assert {abs(c - n / 10) < 1 for c in plain_bin_counts(values, cuts)} == {True}


def test_binning_psi_and_kl_of_a_whole_analysis_match_the_plain_implementation() -> None:
    reference = normal(2, 3000)
    current = normal(3, 2500, shift=0.3, scale=1.2)
    feature = analyze_drift({"x": reference}, {"x": current}).feature("x")
    cuts = feature.cut_points
    assert feature.bin_edges == (None, *cuts, None)
    assert list(feature.reference_counts) == plain_bin_counts(reference.tolist(), cuts)
    assert list(feature.current_counts) == plain_bin_counts(current.tolist(), cuts)
    assert sum(feature.reference_counts) == feature.n_reference == 3000
    ref_counts, cur_counts = list(feature.reference_counts), list(feature.current_counts)
    assert feature.psi == pytest.approx(plain_psi(ref_counts, cur_counts), rel=1e-12)
    assert feature.kl == pytest.approx(plain_kl(ref_counts, cur_counts), rel=1e-12)


def test_a_tied_reference_gets_fewer_bins_not_empty_ones() -> None:
    reference = np.repeat([1.0, 2.0, 3.0], [500, 300, 1200])
    feature = analyze_drift({"x": reference}, {"x": reference[::-1]}).feature("x")
    assert feature.cut_points == (2.0, 3.0)
    assert feature.reference_counts == (500, 300, 1200)
    assert feature.psi == 0


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shift=st.floats(-1, 1), n=st.integers(50, 5000))
def test_frozen_edges_reused_give_identical_bins(seed: int, shift: float, n: int) -> None:
    reference = {"x": normal(seed, n)}
    current = {"x": normal(seed + 1, n, shift=shift)}
    first = analyze_drift(reference, current)
    assert freeze_reference(reference) == first.cut_points()

    # the frozen edges survive the JSON report and bin the same data identically
    stored = DriftResult.model_validate_json(first.model_dump_json()).cut_points()
    again = analyze_drift(reference, current, cut_points=stored)
    assert again == first

    # a later report on a new reference keeps the old bins when handed them
    later = analyze_drift({"x": normal(seed + 2, n)}, current, cut_points=stored).feature("x")
    assert later.bin_edges == first.feature("x").bin_edges
    assert later.current_counts == first.feature("x").current_counts


# --- KS equals scipy ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n1", "n2", "data"),
    [
        (30, 45, "normal"),
        (1000, 1000, "normal"),
        (5000, 7001, "shifted"),
        (10_000, 10_000, "shifted"),
        (10_001, 10_001, "normal"),
        (10_001, 600, "shifted"),
        (15_000, 12_000, "shifted"),
        (50_000, 30_011, "normal"),
        (200_000, 150_000, "slightly shifted"),
        (3000, 4000, "ties"),
        (20_000, 25_000, "ties"),
        (100_000, 100_000, "ties"),
        (20_000, 20_000, "identical"),
        (20_000, 20_000, "disjoint"),
    ],
)
def test_ks_equals_scipy(n1: int, n2: int, data: str) -> None:
    rng = np.random.default_rng(n1 * 7 + n2)
    if data == "ties":
        a, b = rng.integers(0, 30, n1).astype(float), rng.integers(1, 31, n2).astype(float)
    elif data == "identical":
        a = rng.normal(size=n1)
        b = rng.permutation(a)
    elif data == "disjoint":
        a, b = rng.normal(size=n1), rng.normal(size=n2) + 100
    else:
        shift = {"normal": 0.0, "shifted": 0.1, "slightly shifted": 0.008}[data]
        a, b = rng.normal(size=n1), rng.normal(shift, 1, n2)
    ours = ks_two_sample(a, b)
    d, p = scipy_ks(a, b)
    assert ours.statistic == pytest.approx(d, rel=0, abs=1e-12)
    assert ours.pvalue == pytest.approx(p, rel=0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n1=st.integers(1, 40_000),
    n2=st.integers(1, 40_000),
    shift=st.floats(0, 0.5),
    levels=st.sampled_from([0, 2, 10, 1000]),
)
def test_ks_equals_scipy_on_generated_samples(
    seed: int, n1: int, n2: int, shift: float, levels: int
) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n1)
    b = rng.normal(shift, 1, n2)
    if levels:  # rounding onto a grid makes ties within and across the samples
        a, b = np.round(a * levels) / levels, np.round(b * levels) / levels
    ours = ks_two_sample(a, b)
    d, p = scipy_ks(a, b)
    assert ours.statistic == pytest.approx(d, rel=0, abs=1e-12)
    assert ours.pvalue == pytest.approx(p, rel=0, abs=1e-12)


def test_the_full_analysis_reports_scipys_ks_on_every_feature() -> None:
    reference = {f"f{i}": normal(i, 20_000 + i) for i in range(4)}
    current = {f"f{i}": normal(10 + i, 15_000, shift=0.02 * i) for i in range(4)}
    result = analyze_drift(reference, current, workers=2)
    for feature in result.features:
        d, p = scipy_ks(reference[feature.name], current[feature.name])
        assert feature.ks_d == pytest.approx(d, rel=0, abs=1e-12)
        assert feature.ks_p == pytest.approx(p, rel=0, abs=1e-12)
    assert analyze_drift(reference, current, workers=1) == result


def test_ks_refuses_empty_samples_and_nan() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ks_two_sample([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        ks_two_sample([1.0, math.nan], [1.0])


# --- the significance rule ------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 999, 1000])
def test_a_thousand_events_or_fewer_is_insufficient_even_for_a_huge_shift(n: int) -> None:
    result = analyze_drift({"x": normal(1, n)}, {"x": normal(2, n, shift=5)})
    feature = result.feature("x")
    assert feature.psi > 1
    assert result.verdict is feature.verdict is Verdict.INSUFFICIENT_DATA


def test_one_side_small_is_enough_to_be_insufficient() -> None:
    result = analyze_drift({"x": normal(1, 50_000)}, {"x": normal(2, 1000, shift=5)})
    assert result.verdict is Verdict.INSUFFICIENT_DATA


def test_a_real_shift_on_enough_events_drifts() -> None:
    result = analyze_drift({"x": normal(1, 1001)}, {"x": normal(2, 1001, shift=1)})
    feature = result.feature("x")
    assert feature.psi >= 0.1
    assert feature.ks_p is not None
    assert feature.ks_p < 0.05
    assert result.verdict is feature.verdict is Verdict.DRIFT


def test_a_tiny_shift_on_huge_samples_is_significant_but_below_the_effect_floor() -> None:
    result = analyze_drift({"x": normal(1, 200_000)}, {"x": normal(2, 200_000, shift=0.05)})
    feature = result.feature("x")
    assert feature.ks_p is not None
    assert feature.ks_p < 1e-20  # overwhelming significance ...
    assert feature.psi < 0.01  # ... of a trivial effect
    assert result.verdict is feature.verdict is Verdict.NO_DRIFT


def _borderline_category_counts() -> tuple[npt.NDArray[np.str_], npt.NDArray[np.str_]]:
    reference = np.repeat(np.array(["a", "b"]), [1500, 1500])
    current = np.repeat(np.array(["a", "b"]), [1420, 1580])
    return reference, current


def test_bonferroni_over_k_features() -> None:
    # The effect floor is switched off to isolate the multiple-comparison correction.
    no_floor = DriftThresholds(psi_floor=0)
    reference, current = _borderline_category_counts()
    p = analyze_drift({"crop": reference}, {"crop": current}, no_floor).feature("crop").chi2_p
    assert p is not None
    assert 0.05 / 20 < p < 0.05  # significant alone, not among twenty

    alone = analyze_drift({"crop": reference}, {"crop": current}, no_floor)
    assert alone.per_feature_alpha == 0.05
    assert alone.verdict is Verdict.DRIFT

    steady = {f"steady{i}": normal(i, 3000) for i in range(19)}
    many = analyze_drift({"crop": reference, **steady}, {"crop": current, **steady}, no_floor)
    assert many.per_feature_alpha == pytest.approx(0.05 / 20)
    assert many.feature("crop").verdict is Verdict.NO_DRIFT
    assert many.verdict is Verdict.NO_DRIFT


def test_the_overall_verdict_prefers_drift_then_insufficient_data() -> None:
    enough, few = 5000, 100
    drifted = (normal(1, enough), normal(2, enough, shift=2))
    steady = (normal(3, enough), normal(4, enough))
    sparse = (normal(5, few), normal(6, few))
    both = analyze_drift({"a": drifted[0], "s": sparse[0]}, {"a": drifted[1], "s": sparse[1]})
    assert both.verdict is Verdict.DRIFT
    partial = analyze_drift({"b": steady[0], "s": sparse[0]}, {"b": steady[1], "s": sparse[1]})
    assert [f.verdict for f in partial.features] == [Verdict.NO_DRIFT, Verdict.INSUFFICIENT_DATA]
    assert partial.verdict is Verdict.INSUFFICIENT_DATA
    assert analyze_drift({"b": steady[0]}, {"b": steady[1]}).verdict is Verdict.NO_DRIFT


def test_thresholds_are_parameters() -> None:
    reference, current = normal(1, 500), normal(2, 500, shift=1)
    lenient = DriftThresholds(min_events=100, psi_floor=0.2, alpha=0.01, bins=5)
    result = analyze_drift({"x": reference}, {"x": current}, lenient)
    assert result.thresholds == lenient
    assert len(result.feature("x").reference_counts) == 5
    assert result.verdict is Verdict.DRIFT
    with pytest.raises(ValidationError):
        DriftThresholds(bins=1)


# --- categorical features -------------------------------------------------------------------------


def test_categorical_feature() -> None:
    reference = ["wheat"] * 600 + ["corn"] * 400 + ["soy"] * 200
    current = ["wheat"] * 300 + ["corn"] * 500 + ["rice"] * 400 + [None] * 7
    feature = analyze_drift({"crop": reference}, {"crop": current}).feature("crop")
    assert feature.kind is FeatureKind.CATEGORICAL
    assert feature.categories == ("corn", "rice", "soy", "wheat")
    assert feature.reference_counts == (400, 0, 200, 600)
    assert feature.current_counts == (500, 400, 0, 300)
    assert (feature.n_reference, feature.n_current) == (1200, 1200)  # None is missing
    assert feature.ks_d is None
    assert feature.ks_p is None
    assert feature.bin_edges is None
    expected = stats.chi2_contingency(
        np.array([feature.reference_counts, feature.current_counts]), correction=False
    )
    assert feature.chi2 == pytest.approx(float(expected.statistic), rel=1e-12)
    assert feature.chi2_p == pytest.approx(float(expected.pvalue), rel=1e-12, abs=1e-300)
    assert feature.psi == pytest.approx(plain_psi([400, 0, 200, 600], [500, 400, 0, 300]))
    assert feature.kl == pytest.approx(plain_kl([400, 0, 200, 600], [500, 400, 0, 300]))
    assert feature.verdict is Verdict.DRIFT


def test_categorical_kinds_are_inferred_from_the_dtype() -> None:
    flags = np.array([True, False] * 600)
    labels = np.array(["a", "b", "c"] * 400)
    result = analyze_drift({"flag": flags, "label": labels}, {"flag": flags, "label": labels})
    assert [f.kind for f in result.features] == [FeatureKind.CATEGORICAL] * 2
    assert result.feature("flag").categories == ("False", "True")
    assert result.feature("label").chi2_p == 1.0
    assert result.verdict is Verdict.NO_DRIFT


def test_numbers_with_missing_values_stay_numeric() -> None:
    reference: list[float | None] = [*(float(i) for i in range(1500)), None, math.nan]
    current = np.array([float(i) for i in range(1500)] + [math.nan] * 3)
    feature = analyze_drift({"x": reference}, {"x": current}).feature("x")
    assert feature.kind is FeatureKind.NUMERIC
    assert (feature.n_reference, feature.n_current) == (1500, 1500)
    assert (feature.ks_d, feature.ks_p, feature.psi) == (0.0, 1.0, 0.0)


# --- the result as a JSON document ----------------------------------------------------------------


def test_the_result_is_plain_json_and_round_trips() -> None:
    reference: dict[str, Any] = {"x": normal(1, 2000), "crop": ["a", "b"] * 1000}
    current: dict[str, Any] = {"x": normal(2, 2000, shift=0.5), "crop": ["a", "b", "b"] * 700}
    result = analyze_drift(reference, current)
    document = result.model_dump(mode="json")
    canonical_json(document)  # refuses NaN and Infinity
    numeric = document["features"][0]
    assert numeric["bin_edges"][0] is None
    assert numeric["bin_edges"][-1] is None
    assert all(isinstance(edge, float) for edge in numeric["bin_edges"][1:-1])
    assert DriftResult.model_validate(document) == result


def test_inconsistent_documents_are_refused() -> None:
    result = analyze_drift({"x": normal(1, 2000)}, {"x": normal(2, 2000)})
    document = result.model_dump(mode="json")
    feature = document["features"][0]
    for change in (
        {"chi2": 1.0},
        {"ks_p": None},
        {"bin_edges": [0.0, *feature["bin_edges"][1:]]},
        {"reference_counts": feature["reference_counts"][1:]},
        {"psi": math.nan},
    ):
        broken = document | {"features": [feature | change]}
        with pytest.raises(ValidationError):
            DriftResult.model_validate(broken)
    for forged in (
        document | {"verdict": "DRIFT"},
        document | {"features": [feature | {"verdict": "DRIFT"}]},
        document | {"features": [feature, feature], "per_feature_alpha": 0.025},
        document | {"per_feature_alpha": 0.01},
    ):
        with pytest.raises(ValidationError):
            DriftResult.model_validate(forged)


# --- refusals -------------------------------------------------------------------------------------


def test_features_must_match() -> None:
    with pytest.raises(ValueError, match=r"only in reference: \['b'\], only in current: \['c'\]"):
        analyze_drift({"a": [1.0], "b": [1.0]}, {"a": [1.0], "c": [1.0]})
    with pytest.raises(ValueError, match="no features"):
        analyze_drift({}, {})


def test_kinds_must_match() -> None:
    with pytest.raises(ValueError, match="numeric in the reference but categorical"):
        analyze_drift({"a": [1.0, 2.0]}, {"a": ["x", "y"]})


@pytest.mark.parametrize(
    ("reference", "current", "message"),
    [
        ([1.0, math.inf], [1.0], "infinite values in the reference"),
        ([1.0], [math.nan, math.nan], "no values in the current"),
        ([None, None], ["a"], "no values in the reference"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "one-dimensional"),
        (np.array([1 + 2j]), np.array([1 + 2j]), "cannot analyse"),
    ],
)
def test_unusable_values_are_refused(reference: Any, current: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_drift({"a": reference}, {"a": current})


@pytest.mark.parametrize(
    ("cut_points", "message"),
    [
        ({"zz": [0.0]}, "unknown feature"),
        ({"x": [1.0, 0.0]}, "finite and increasing"),
        ({"x": [0.0, math.inf]}, "finite and increasing"),
        ({"crop": [0.0]}, "categorical"),
    ],
)
def test_bad_cut_points_are_refused(cut_points: dict[str, list[float]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        analyze_drift(
            {"x": [1.0, 2.0], "crop": ["a", "b"]},
            {"x": [1.0, 2.0], "crop": ["a", "b"]},
            cut_points=cut_points,
        )
