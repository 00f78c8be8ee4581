"""Drift statistics per feature (M19): PSI, KL divergence, the two-sample KS test for numeric
features and a chi-square test for categorical ones, with a significance rule that stays honest
on huge samples.

Definitions, fixed here once:

- **Numeric bins.** Bins are left-closed: ``(-inf, c1), [c1, c2), …, [ck, +inf)``, so every
  finite value falls in one. The cut points are the reference's empirical quantiles: the order
  statistics at 0-based ranks ``k·n // bins`` for ``k = 1 … bins-1``, so each bin holds
  ``n/bins`` reference values (±1) when there are no ties. Duplicates and the reference minimum
  are dropped: a heavily tied reference gets fewer bins, never an empty reference bin (and an
  interpolated quantile could fall between two tied values and make one).
  The cut points are part of the result (:attr:`FeatureDrift.bin_edges`, where the infinite
  outer edges are written as ``null`` because JSON has no Infinity) and can be handed back to
  :func:`analyze_drift` so a later report bins its data exactly like an earlier one.
- **PSI** ``= Σ (r - c)·(ln r - ln c)`` over bins (or categories), ``r`` and ``c`` the reference
  and current fractions, an empty bin's fraction replaced by ``epsilon`` (no renormalisation,
  the usual industry definition). Written with the difference of logarithms so that swapping
  the samples gives bit-for-bit the same value.
- **KL** is ``KL(current ‖ reference) = Σ c·(ln c - ln r)``: the information lost when the
  reference distribution stands in for the current one, the direction a monitor asks about. It
  uses the same ``epsilon``-smoothed fractions, renormalised to sum to 1 so that KL ≥ 0 holds
  (without renormalisation the smoothing can make it slightly negative).
- **KS** statistic D and p-value equal ``scipy.stats.ks_2samp(reference, current)`` (two-sided,
  ``method='auto'``). Up to 10 000 values per sample scipy's exact path is called as is; above,
  D is computed from the sorted samples (the same sort that gives the bins) and the p-value with
  the distribution scipy uses there, ``scipy.stats.kstwo.sf(D, round(m·n/(m+n)))``. Note: when
  ``2.2 ≤ N·D² < 370`` scipy evaluates that p-value with ``scipy.special.smirnov``, whose cost
  grows linearly with N (about 0.6 s at N = 5·10⁵, holding the GIL, so such features are not
  sped up by the worker threads); scipy's own ``ks_2samp`` pays the same.
- **Categorical** features: categories are compared by their string form; PSI and KL over the
  union of categories; significance from Pearson's chi-square test of homogeneity on the 2xK
  table of counts (``scipy.stats.chi2_contingency`` without Yates' correction), which treats both
  samples as random and copes with categories seen in only one of them.
- **Missing values**: NaN (numeric) and ``None`` (categorical) are dropped; ``n_reference`` and
  ``n_current`` count what is left. Infinite numeric values are refused: they have no quantile.

Significance (M19): a feature whose reference or current sample has ``min_events`` or fewer
values is INSUFFICIENT_DATA, never DRIFT. Otherwise it DRIFTs when its p-value (KS or
chi-square) is below ``alpha / k`` — Bonferroni over the ``k`` features compared — **and** its
PSI is at least ``psi_floor``, so that a huge sample does not alarm on a trivial shift. The
overall verdict is DRIFT if any feature drifts; otherwise INSUFFICIENT_DATA if any feature could
not be tested (no-drift cannot be claimed for it); otherwise NO_DRIFT.
"""

from __future__ import annotations

import itertools
import math
import numbers
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
FeatureValues = npt.NDArray[Any] | Sequence[Any]


def _stats() -> Any:
    """``scipy.stats``, imported on first use: it takes about a second to import, and the CLI
    and the API import this module without computing a report."""
    from scipy import stats

    return stats


# scipy.stats.ks_2samp's MAX_AUTO_N: with method='auto' it is exact up to this sample size.
_SCIPY_EXACT_KS_MAX_N = 10_000


class FeatureKind(StrEnum):
    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Verdict(StrEnum):
    DRIFT = "DRIFT"
    NO_DRIFT = "NO_DRIFT"
    INSUFFICIENT_DATA = "INSUFFICIENT_DATA"


class DriftThresholds(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    alpha: float = Field(default=0.05, gt=0, lt=1)
    psi_floor: float = Field(default=0.1, ge=0)
    min_events: int = Field(default=1000, ge=0)
    bins: int = Field(default=10, ge=2)
    epsilon: float = Field(default=1e-4, gt=0, lt=1)


class FeatureDrift(BaseModel):
    """One feature's statistics and verdict. Numeric features carry ``ks_d``/``ks_p`` and
    ``bin_edges``; categorical ones ``chi2``/``chi2_p`` and ``categories``. The counts are per
    bin (or per category), in the order of the edges (or categories)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    kind: FeatureKind
    n_reference: int = Field(ge=0)
    n_current: int = Field(ge=0)
    psi: float = Field(ge=0)
    kl: float = Field(ge=0)
    ks_d: float | None = None
    ks_p: float | None = None
    chi2: float | None = None
    chi2_p: float | None = None
    bin_edges: tuple[float | None, ...] | None = None
    categories: tuple[str, ...] | None = None
    reference_counts: tuple[int, ...]
    current_counts: tuple[int, ...]
    verdict: Verdict

    @model_validator(mode="after")
    def _fields_match_kind(self) -> Self:
        numeric = (self.ks_d, self.ks_p, self.bin_edges)
        categorical = (self.chi2, self.chi2_p, self.categories)
        present, absent = (
            (numeric, categorical) if self.kind is FeatureKind.NUMERIC else (categorical, numeric)
        )
        if any(value is None for value in present) or any(v is not None for v in absent):
            raise ValueError(f"statistics of feature {self.name!r} do not match kind {self.kind}")
        bins = len(self.bin_edges) - 1 if self.bin_edges is not None else len(self.categories or ())
        if not len(self.reference_counts) == len(self.current_counts) == bins:
            raise ValueError(f"counts of feature {self.name!r} do not match its bins")
        if self.bin_edges is not None and (
            len(self.bin_edges) < 2
            or self.bin_edges[0] is not None
            or self.bin_edges[-1] is not None
            or any(edge is None for edge in self.bin_edges[1:-1])
        ):
            raise ValueError("bin_edges must be null, the cut points, null")
        return self

    @property
    def cut_points(self) -> tuple[float, ...]:
        """The finite inner bin edges (empty for a categorical feature)."""
        return tuple(edge for edge in self.bin_edges or () if edge is not None)


class DriftResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    features: tuple[FeatureDrift, ...] = Field(min_length=1)
    verdict: Verdict
    thresholds: DriftThresholds
    per_feature_alpha: float = Field(gt=0, lt=1)

    @model_validator(mode="after")
    def _verdicts_follow_from_statistics(self) -> Self:
        names = [feature.name for feature in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if self.per_feature_alpha != self.thresholds.alpha / len(self.features):
            raise ValueError("per_feature_alpha must be alpha / number of features")
        for feature in self.features:
            p_value = feature.ks_p if feature.kind is FeatureKind.NUMERIC else feature.chi2_p
            expected = _feature_verdict(
                feature.n_reference,
                feature.n_current,
                p_value if p_value is not None else math.nan,
                feature.psi,
                self.thresholds,
                self.per_feature_alpha,
            )
            if feature.verdict is not expected:
                raise ValueError(f"verdict of feature {feature.name!r} should be {expected}")
        if self.verdict is not _overall_verdict(f.verdict for f in self.features):
            raise ValueError("the overall verdict does not follow from the features' verdicts")
        return self

    def feature(self, name: str) -> FeatureDrift:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)

    def cut_points(self) -> dict[str, tuple[float, ...]]:
        """The frozen numeric bin cut points, to pass to a later :func:`analyze_drift`."""
        return {f.name: f.cut_points for f in self.features if f.kind is FeatureKind.NUMERIC}


@dataclass(frozen=True, slots=True)
class KsResult:
    statistic: float
    pvalue: float


def population_stability_index(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, epsilon: float = 1e-4
) -> float:
    r, c = _smoothed_fractions(reference_counts, current_counts, epsilon)
    return float(np.sum((r - c) * (np.log(r) - np.log(c))))


def kl_divergence(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, epsilon: float = 1e-4
) -> float:
    """KL(current ‖ reference) on the smoothed fractions, renormalised (see the module doc)."""
    r, c = _smoothed_fractions(reference_counts, current_counts, epsilon)
    r, c = r / r.sum(), c / c.sum()
    return max(0.0, float(np.sum(c * (np.log(c) - np.log(r)))))


def _smoothed_fractions(
    reference_counts: npt.ArrayLike, current_counts: npt.ArrayLike, epsilon: float
) -> tuple[FloatArray, FloatArray]:
    ref = np.asarray(reference_counts, dtype=np.float64)
    cur = np.asarray(current_counts, dtype=np.float64)
    if ref.ndim != 1 or ref.shape != cur.shape or ref.size == 0:
        raise ValueError("counts must be two non-empty vectors of the same length")
    if (ref < 0).any() or (cur < 0).any() or ref.sum() == 0 or cur.sum() == 0:
        raise ValueError("counts must be non-negative with a positive total")
    r = ref / ref.sum()
    c = cur / cur.sum()
    return np.where(ref == 0, epsilon, r), np.where(cur == 0, epsilon, c)


def reference_cut_points(sorted_values: FloatArray, bins: int) -> tuple[float, ...]:
    """The inner bin edges for an ascending reference sample (see the module doc)."""
    n = sorted_values.size
    if n == 0:
        raise ValueError("no values to take quantiles of")
    ranks = np.arange(1, bins, dtype=np.int64) * n // bins
    edges = np.unique(sorted_values[ranks])
    return tuple(float(edge) for edge in edges[edges > sorted_values[0]])


def ks_two_sample(reference: npt.ArrayLike, current: npt.ArrayLike) -> KsResult:
    """``scipy.stats.ks_2samp(reference, current)``'s statistic and p-value, fast on big samples."""
    ref = np.sort(np.asarray(reference, dtype=np.float64))
    cur = np.sort(np.asarray(current, dtype=np.float64))
    if ref.size == 0 or cur.size == 0:
        raise ValueError("the KS test needs two non-empty samples")
    if np.isnan(ref[-1]) or np.isnan(cur[-1]):  # NaN sorts last
        raise ValueError("the KS test needs samples without NaN")
    if max(ref.size, cur.size) <= _SCIPY_EXACT_KS_MAX_N:
        return _scipy_exact_ks(ref, cur)
    return _asymptotic_ks(ref, cur)


def _scipy_exact_ks(ref_sorted: FloatArray, cur_sorted: FloatArray) -> KsResult:
    # scipy's exact path may fall back to its asymptotic one with a RuntimeWarning; that fallback
    # is the value we promise to equal, so the warning is not news to our caller. Only called
    # outside the worker threads: catch_warnings swaps process-global state.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        result = _stats().ks_2samp(ref_sorted, cur_sorted)
    return KsResult(float(result.statistic), float(result.pvalue))


def _asymptotic_ks(ref_sorted: FloatArray, cur_sorted: FloatArray) -> KsResult:
    """scipy's ``mode='asymp'`` two-sided path on sorted samples.

    scipy takes max and min of ``F1 - F2`` over every pooled value (four binary searches of
    n1 + n2 values). ``F1 - F2`` rises only at reference values and falls only at current
    values, so its maximum is reached at a reference value and its minimum at a current value;
    within a run of ties the run's last rank gives the extreme. Evaluating ``i/n1 - F2`` at
    every reference value and ``F1 - j/n2`` at every current value therefore yields the very
    same two floats with two searches, on the samples already sorted for the bins.
    """
    n1, n2 = ref_sorted.size, cur_sorted.size
    cur_at_ref = np.searchsorted(cur_sorted, ref_sorted, side="right").astype(np.float64)
    cur_at_ref /= n2
    diff = np.arange(1, n1 + 1, dtype=np.float64)
    diff /= n1
    diff -= cur_at_ref
    max_s = float(diff.max())
    del diff, cur_at_ref  # two arrays of n1 floats: free them before allocating two of n2
    ref_at_cur = np.searchsorted(ref_sorted, cur_sorted, side="right").astype(np.float64)
    ref_at_cur /= n1
    steps = np.arange(1, n2 + 1, dtype=np.float64)
    steps /= n2
    ref_at_cur -= steps
    min_s = float(np.clip(-ref_at_cur.min(), 0.0, 1.0))
    d = min_s if min_s > max_s else max_s
    m, n = sorted([float(n1), float(n2)], reverse=True)
    effective_n = np.round(m * n / (m + n))
    p = float(np.clip(_stats().kstwo.sf(d, effective_n), 0.0, 1.0))
    return KsResult(d, p)


@dataclass(frozen=True, slots=True)
class _NumericStats:
    n_reference: int
    n_current: int
    cut_points: tuple[float, ...]
    reference_counts: IntArray
    current_counts: IntArray
    # the sorted samples themselves when they are small enough for scipy's exact KS path, which
    # must run outside the worker threads (see _scipy_exact_ks)
    ks: KsResult | tuple[FloatArray, FloatArray]


def _numeric_stats(
    name: str,
    reference: FloatArray,
    current: FloatArray,
    frozen: tuple[float, ...] | None,
    bins: int,
) -> _NumericStats:
    ref = _sorted_finite(name, "reference", reference)
    cur = _sorted_finite(name, "current", current)
    cuts = frozen if frozen is not None else reference_cut_points(ref, bins)
    cut_array = np.asarray(cuts, dtype=np.float64)
    small = max(ref.size, cur.size) <= _SCIPY_EXACT_KS_MAX_N
    return _NumericStats(
        n_reference=int(ref.size),
        n_current=int(cur.size),
        cut_points=cuts,
        reference_counts=_bin_counts(ref, cut_array),
        current_counts=_bin_counts(cur, cut_array),
        ks=(ref, cur) if small else _asymptotic_ks(ref, cur),
    )


def _sorted_finite(name: str, sample: str, values: FloatArray) -> FloatArray:
    ordered = np.sort(values)
    # NaN sorts last, so the missing values are a tail to cut off, found by bisection
    ordered = ordered[: int(np.searchsorted(ordered, np.nan, side="left"))]
    if ordered.size == 0:
        raise ValueError(f"feature {name!r} has no values in the {sample} sample")
    if np.isinf(ordered[0]) or np.isinf(ordered[-1]):
        raise ValueError(f"feature {name!r} has infinite values in the {sample} sample")
    return ordered


def _bin_counts(sorted_values: FloatArray, cut_points: FloatArray) -> IntArray:
    below = np.searchsorted(sorted_values, cut_points, side="left")
    bounds = np.concatenate(([0], below, [sorted_values.size])).astype(np.int64)
    return np.diff(bounds)


def _category_counts(name: str, sample: str, values: npt.NDArray[Any]) -> Counter[str]:
    if values.dtype.kind == "O":
        counts = Counter(str(value) for value in values.tolist() if not _missing(value))
    else:
        distinct, times = np.unique(values, return_counts=True)
        counts = Counter(dict(zip(map(str, distinct.tolist()), times.tolist(), strict=True)))
    if not counts:
        raise ValueError(f"feature {name!r} has no values in the {sample} sample")
    return counts


def _kind_and_array(name: str, sample: str, values: FeatureValues) -> tuple[FeatureKind, Any]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"feature {name!r}: the {sample} sample must be one-dimensional")
    kind = array.dtype.kind
    if kind in "iuf":
        return FeatureKind.NUMERIC, array.astype(np.float64, copy=False)
    if kind == "O" and _all_real_numbers(array):
        return FeatureKind.NUMERIC, np.asarray(
            [np.nan if value is None else value for value in array.tolist()], dtype=np.float64
        )
    if kind in "bUSO":
        return FeatureKind.CATEGORICAL, array
    raise ValueError(f"feature {name!r}: cannot analyse values of dtype {array.dtype}")


def _all_real_numbers(array: npt.NDArray[Any]) -> bool:
    # A list of numbers with None for missing arrives as an object array; it is still numeric.
    present = [value for value in array.tolist() if value is not None]
    return bool(present) and all(
        isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)
        for value in present
    )


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def freeze_reference(
    reference: Mapping[str, FeatureValues], thresholds: DriftThresholds | None = None
) -> dict[str, tuple[float, ...]]:
    """The bin cut points of every numeric feature of a reference sample."""
    bins = (thresholds or DriftThresholds()).bins
    frozen: dict[str, tuple[float, ...]] = {}
    for name, values in reference.items():
        kind, array = _kind_and_array(name, "reference", values)
        if kind is FeatureKind.NUMERIC:
            frozen[name] = reference_cut_points(_sorted_finite(name, "reference", array), bins)
    return frozen


def analyze_drift(
    reference: Mapping[str, FeatureValues],
    current: Mapping[str, FeatureValues],
    thresholds: DriftThresholds | None = None,
    *,
    cut_points: Mapping[str, Sequence[float]] | None = None,
    workers: int | None = None,
) -> DriftResult:
    """Compare every feature of ``current`` with ``reference`` (see the module doc).

    ``cut_points`` reuses frozen numeric bins (from :func:`freeze_reference` or
    :meth:`DriftResult.cut_points` of an earlier report) instead of the reference's quantiles.
    Numeric features are analysed on ``workers`` threads (default: one per CPU): numpy's sort
    and search release the GIL.
    """
    limits = thresholds or DriftThresholds()
    names = _matching_feature_names(reference, current)
    frozen = _validated_cut_points(cut_points or {}, names)
    per_feature_alpha = limits.alpha / len(names)

    kinds: dict[str, FeatureKind] = {}
    arrays: dict[str, tuple[Any, Any]] = {}
    for name in names:
        ref_kind, ref = _kind_and_array(name, "reference", reference[name])
        cur_kind, cur = _kind_and_array(name, "current", current[name])
        if ref_kind is not cur_kind:
            raise ValueError(
                f"feature {name!r} is {ref_kind} in the reference but {cur_kind} in the current"
                " sample"
            )
        if name in frozen and ref_kind is FeatureKind.CATEGORICAL:
            raise ValueError(f"cut points given for categorical feature {name!r}")
        kinds[name], arrays[name] = ref_kind, (ref, cur)

    numeric = [name for name in names if kinds[name] is FeatureKind.NUMERIC]
    numeric_stats = _map_threaded(
        lambda name: _numeric_stats(name, *arrays[name], frozen.get(name), limits.bins),
        numeric,
        workers,
    )

    features: list[FeatureDrift] = []
    for name in names:
        ref, cur = arrays[name]
        if kinds[name] is FeatureKind.NUMERIC:
            feature = _numeric_feature(name, numeric_stats[name], limits, per_feature_alpha)
        else:
            feature = _categorical_feature(name, ref, cur, limits, per_feature_alpha)
        features.append(feature)

    return DriftResult(
        features=tuple(features),
        verdict=_overall_verdict(f.verdict for f in features),
        thresholds=limits,
        per_feature_alpha=per_feature_alpha,
    )


def _matching_feature_names(
    reference: Mapping[str, FeatureValues], current: Mapping[str, FeatureValues]
) -> list[str]:
    only_reference = sorted(set(reference) - set(current))
    only_current = sorted(set(current) - set(reference))
    if only_reference or only_current:
        raise ValueError(
            "reference and current samples must have the same features; "
            f"only in reference: {only_reference}, only in current: {only_current}"
        )
    if not reference:
        raise ValueError("no features to compare")
    return list(reference)


def _validated_cut_points(
    cut_points: Mapping[str, Sequence[float]], names: list[str]
) -> dict[str, tuple[float, ...]]:
    frozen: dict[str, tuple[float, ...]] = {}
    for name, points in cut_points.items():
        if name not in names:
            raise ValueError(f"cut points given for unknown feature {name!r}")
        values = tuple(float(point) for point in points)
        if not all(math.isfinite(v) for v in values) or any(
            a >= b for a, b in itertools.pairwise(values)
        ):
            raise ValueError(f"cut points of feature {name!r} must be finite and increasing")
        frozen[name] = values
    return frozen


def _map_threaded(
    work: Callable[[str], _NumericStats], names: list[str], workers: int | None
) -> dict[str, _NumericStats]:
    threads = min(workers or os.cpu_count() or 1, len(names))
    if threads <= 1:
        return {name: work(name) for name in names}
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="drift") as pool:
        return dict(zip(names, pool.map(work, names), strict=True))


def _numeric_feature(
    name: str, numbers: _NumericStats, limits: DriftThresholds, per_feature_alpha: float
) -> FeatureDrift:
    ks = numbers.ks if isinstance(numbers.ks, KsResult) else _scipy_exact_ks(*numbers.ks)
    psi = population_stability_index(
        numbers.reference_counts, numbers.current_counts, limits.epsilon
    )
    return FeatureDrift(
        name=name,
        kind=FeatureKind.NUMERIC,
        n_reference=numbers.n_reference,
        n_current=numbers.n_current,
        psi=psi,
        kl=kl_divergence(numbers.reference_counts, numbers.current_counts, limits.epsilon),
        ks_d=ks.statistic,
        ks_p=ks.pvalue,
        bin_edges=(None, *numbers.cut_points, None),
        reference_counts=tuple(numbers.reference_counts.tolist()),
        current_counts=tuple(numbers.current_counts.tolist()),
        verdict=_feature_verdict(
            numbers.n_reference, numbers.n_current, ks.pvalue, psi, limits, per_feature_alpha
        ),
    )


def _categorical_feature(
    name: str,
    reference: npt.NDArray[Any],
    current: npt.NDArray[Any],
    limits: DriftThresholds,
    per_feature_alpha: float,
) -> FeatureDrift:
    ref_counts = _category_counts(name, "reference", reference)
    cur_counts = _category_counts(name, "current", current)
    categories = tuple(sorted(ref_counts.keys() | cur_counts.keys()))
    ref = np.array([ref_counts[c] for c in categories], dtype=np.int64)
    cur = np.array([cur_counts[c] for c in categories], dtype=np.int64)
    test = _stats().chi2_contingency(np.vstack([ref, cur]), correction=False)
    chi2, chi2_p = float(test.statistic), float(test.pvalue)
    psi = population_stability_index(ref, cur, limits.epsilon)
    n_reference, n_current = int(ref.sum()), int(cur.sum())
    return FeatureDrift(
        name=name,
        kind=FeatureKind.CATEGORICAL,
        n_reference=n_reference,
        n_current=n_current,
        psi=psi,
        kl=kl_divergence(ref, cur, limits.epsilon),
        chi2=chi2,
        chi2_p=chi2_p,
        categories=categories,
        reference_counts=tuple(ref.tolist()),
        current_counts=tuple(cur.tolist()),
        verdict=_feature_verdict(n_reference, n_current, chi2_p, psi, limits, per_feature_alpha),
    )


def _feature_verdict(
    n_reference: int,
    n_current: int,
    p_value: float,
    psi: float,
    limits: DriftThresholds,
    per_feature_alpha: float,
) -> Verdict:
    if min(n_reference, n_current) <= limits.min_events:
        return Verdict.INSUFFICIENT_DATA
    if p_value < per_feature_alpha and psi >= limits.psi_floor:
        return Verdict.DRIFT
    return Verdict.NO_DRIFT


def _overall_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    seen = set(verdicts)
    if Verdict.DRIFT in seen:
        return Verdict.DRIFT
    if Verdict.INSUFFICIENT_DATA in seen:
        return Verdict.INSUFFICIENT_DATA
    return Verdict.NO_DRIFT
