"""Ridge regression of a learning event's outcome on its features: fitting, artifact, prediction.

Pure: bytes and values in, values out; no I/O, no clock, no randomness.

The model, format ``rai.ridge/v1``
----------------------------------
Every feature seen in the training rows becomes columns of a design matrix, features ordered by
name:

- a **numeric** feature ``x`` becomes one column ``(x - mean) / std``, with the mean and the
  population standard deviation of the training rows (a constant feature has std 0, stored as 1
  so the column is simply 0). A row without the feature gets the mean, i.e. 0.
- a **categorical** feature (string values) becomes one indicator column per category seen in
  training, categories sorted. A row without the feature, or with a category never seen in
  training, gets all zeros: it contributes nothing beyond the intercept.

A feature's kind is decided by its values across the whole snapshot: numbers only (JSON
booleans are refused) or strings only; a mix is an error rather than a guess.

With ``Z = [1 | X]`` and ``y`` the outcomes, the fit solves ``(ZᵀZ + λP) β = Zᵀy`` in closed
form, ``P = diag(0, 1, …, 1)``: the L2 penalty shrinks every coefficient but not the intercept.
With λ > 0 the matrix is positive definite even when one-hot columns and the intercept are
collinear. Coefficients are on the standardised scale, so λ treats every numeric feature alike
whatever its unit.

The split
---------
An event is held out for validation when its ``field_id`` hashes into the first 20 % of the
space: the first 8 bytes of ``sha256(field_id)`` (UTF-8), big-endian, modulo 10 000, below
2 000. All seasons of one field fall on the same side, so the validation metrics measure how the
model does on fields it never saw, and the split never changes with row order. When either side
would be empty (very few fields), the model is fitted on every row and the validation metrics
are null.

A prediction is the correctly rounded sum (``math.fsum``) of the intercept and each coefficient
times its encoded value: the result does not depend on summation order or on a BLAS library.
The artifact is the canonical JSON (``domain.canonical``) of :meth:`RidgeModel.to_document`;
floats round-trip exactly through JSON, so :func:`load_model` of the bytes predicts bit for bit
what the fitted model predicted, on any machine.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from domain.canonical import canonical_json

MODEL_FORMAT: Final = "rai.ridge/v1"
DEFAULT_L2_LAMBDA: Final = 1.0
VALIDATION_PERCENT: Final = 20
_SPLIT_BUCKETS: Final = 10_000

FeatureValue = float | str
FloatArray = npt.NDArray[np.float64]


class SnapshotError(ValueError):
    """The dataset snapshot is not valid JSON Lines of learning events."""


class TrainingError(ValueError):
    """The snapshot is readable but no model can be fitted on it."""


class ModelFormatError(ValueError):
    """Bytes that are not a ``rai.ridge/v1`` artifact."""


@dataclass(frozen=True)
class LearningEvent:
    """One line of a dataset snapshot. ``outcome`` is None when it was not observed yet."""

    season_id: str
    field_id: str
    features: Mapping[str, FeatureValue]
    outcome: float | None


# -- the snapshot ---------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


def _finite_number(value: object) -> float | None:
    """``value`` as a float if it is a finite JSON number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _parse_event(value: object, line: int) -> LearningEvent:
    if not isinstance(value, dict):
        raise SnapshotError(f"line {line}: a learning event must be a JSON object")
    ids: dict[str, str] = {}
    for key in ("season_id", "field_id"):
        text = value.get(key)
        if not isinstance(text, str) or not text:
            raise SnapshotError(f"line {line}: {key} must be a non-empty string")
        ids[key] = text
    raw_features = value.get("features")
    if not isinstance(raw_features, dict):
        raise SnapshotError(f"line {line}: features must be an object")
    features: dict[str, FeatureValue] = {}
    for name, item in raw_features.items():
        number = _finite_number(item)
        if number is not None:
            features[name] = number
        elif isinstance(item, str):
            features[name] = item
        else:
            raise SnapshotError(
                f"line {line}: feature {name!r} must be a finite number or a string"
            )
    raw_outcome = value.get("outcome")
    outcome = _finite_number(raw_outcome)
    if raw_outcome is not None and outcome is None:
        raise SnapshotError(f"line {line}: outcome must be a finite number or null")
    return LearningEvent(ids["season_id"], ids["field_id"], features, outcome)


def parse_snapshot(data: bytes) -> list[LearningEvent]:
    """The events of a JSON Lines snapshot (blank lines skipped; keys beyond the contract's are
    ignored, so the snapshot step may add fields without breaking older trainers)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"the snapshot is not UTF-8: {exc}") from None
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise SnapshotError(f"line {number}: not JSON: {exc}") from None
        events.append(_parse_event(value, number))
    return events


def in_validation_split(field_id: str) -> bool:
    """True when the field's events are held out for validation (see the module docstring)."""
    digest = hashlib.sha256(field_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % _SPLIT_BUCKETS < (
        _SPLIT_BUCKETS * VALIDATION_PERCENT // 100
    )


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NumericFeature:
    name: str
    mean: float
    std: float
    coefficient: float


@dataclass(frozen=True)
class CategoricalFeature:
    name: str
    categories: tuple[str, ...]
    coefficients: tuple[float, ...]


Feature = NumericFeature | CategoricalFeature


def _numeric_value(feature: NumericFeature, value: FeatureValue | None) -> float:
    if value is None:
        return feature.mean
    number = _finite_number(value)
    if number is None:
        raise ValueError(f"feature {feature.name!r} is numeric, not {value!r}")
    return number


def _category_value(feature: CategoricalFeature, value: FeatureValue | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"feature {feature.name!r} is categorical, not {value!r}")


def _encode(specs: Sequence[Feature], rows: Sequence[Mapping[str, FeatureValue]]) -> FloatArray:
    """The design matrix ``[1 | X]`` of ``rows`` under ``specs`` (coefficients unused)."""
    columns: list[FloatArray] = [np.ones(len(rows))]
    for spec in specs:
        if isinstance(spec, NumericFeature):
            values = np.array([_numeric_value(spec, row.get(spec.name)) for row in rows])
            columns.append((values - spec.mean) / spec.std)
            continue
        index = {category: position for position, category in enumerate(spec.categories)}
        block = np.zeros((len(rows), len(spec.categories)))
        for row_number, row in enumerate(rows):
            category = _category_value(spec, row.get(spec.name))
            position = index.get(category) if category is not None else None
            if position is not None:
                block[row_number, position] = 1.0
        columns.extend(block.T)
    return np.column_stack(columns)


@dataclass(frozen=True)
class RidgeModel:
    """A fitted ``rai.ridge/v1`` model: everything needed to predict, nothing else."""

    features: tuple[Feature, ...]
    intercept: float
    l2_lambda: float

    def coefficient_vector(self) -> FloatArray:
        """β in design-matrix column order: intercept first."""
        values = [self.intercept]
        for feature in self.features:
            if isinstance(feature, NumericFeature):
                values.append(feature.coefficient)
            else:
                values.extend(feature.coefficients)
        return np.array(values)

    def predict(self, features: Mapping[str, FeatureValue]) -> float:
        """The predicted outcome. Features the model does not know are ignored; a missing one
        counts as its training mean (numeric) or as no category (categorical)."""
        terms = [self.intercept]
        for feature in self.features:
            value = features.get(feature.name)
            if isinstance(feature, NumericFeature):
                encoded = (_numeric_value(feature, value) - feature.mean) / feature.std
                terms.append(feature.coefficient * encoded)
                continue
            category = _category_value(feature, value)
            if category is None:
                continue
            position = bisect.bisect_left(feature.categories, category)
            if position < len(feature.categories) and feature.categories[position] == category:
                terms.append(feature.coefficients[position])
        # Correctly rounded, so independent of summation order and of any BLAS: the same
        # artifact predicts the same bits everywhere.
        return math.fsum(terms)

    def predict_many(self, rows: Sequence[Mapping[str, FeatureValue]]) -> FloatArray:
        return np.array([self.predict(row) for row in rows], dtype=np.float64)

    def to_document(self) -> dict[str, Any]:
        features: list[dict[str, Any]] = []
        for feature in self.features:
            if isinstance(feature, NumericFeature):
                features.append(
                    {
                        "name": feature.name,
                        "kind": "numeric",
                        "mean": feature.mean,
                        "std": feature.std,
                        "coefficient": feature.coefficient,
                    }
                )
            else:
                features.append(
                    {
                        "name": feature.name,
                        "kind": "categorical",
                        "categories": list(feature.categories),
                        "coefficients": list(feature.coefficients),
                    }
                )
        return {
            "format": MODEL_FORMAT,
            "target": "outcome",
            "l2_lambda": self.l2_lambda,
            "intercept": self.intercept,
            "features": features,
            "encoding": {
                "numeric": "(x - mean) / std; a missing value counts as the mean",
                "categorical": "one indicator per category; missing or unseen: all zeros",
                "prediction": "correctly rounded sum of intercept and coefficient * encoded value",
            },
        }

    def to_bytes(self) -> bytes:
        """The artifact: canonical JSON, so equal models are equal bytes."""
        return canonical_json(self.to_document())


# -- loading --------------------------------------------------------------------------------


def _number(value: object, where: str) -> float:
    number = _finite_number(value)
    if number is None:
        raise ModelFormatError(f"{where} must be a finite number")
    return number


def _load_feature(value: object, position: int) -> Feature:
    where = f"features[{position}]"
    if not isinstance(value, dict):
        raise ModelFormatError(f"{where} must be an object")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ModelFormatError(f"{where}.name must be a non-empty string")
    kind = value.get("kind")
    if kind == "numeric":
        std = _number(value.get("std"), f"{where}.std")
        if std <= 0:
            raise ModelFormatError(f"{where}.std must be positive")
        return NumericFeature(
            name,
            _number(value.get("mean"), f"{where}.mean"),
            std,
            _number(value.get("coefficient"), f"{where}.coefficient"),
        )
    if kind == "categorical":
        categories = value.get("categories")
        coefficients = value.get("coefficients")
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise ModelFormatError(f"{where}.categories must be a list of strings")
        if categories != sorted(set(categories)):
            raise ModelFormatError(f"{where}.categories must be sorted and distinct")
        if not isinstance(coefficients, list) or len(coefficients) != len(categories):
            raise ModelFormatError(f"{where}.coefficients must match its categories")
        return CategoricalFeature(
            name,
            tuple(categories),
            tuple(
                _number(item, f"{where}.coefficients[{i}]") for i, item in enumerate(coefficients)
            ),
        )
    raise ModelFormatError(f"{where}.kind must be 'numeric' or 'categorical'")


def load_model(data: bytes) -> RidgeModel:
    """The model of an artifact's bytes; ModelFormatError if they are not ``rai.ridge/v1``."""
    try:
        document = json.loads(data, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise ModelFormatError(f"not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise ModelFormatError(f"not a {MODEL_FORMAT} artifact")
    raw_features = document.get("features")
    if not isinstance(raw_features, list):
        raise ModelFormatError("features must be a list")
    features = tuple(_load_feature(item, i) for i, item in enumerate(raw_features))
    names = [feature.name for feature in features]
    if len(set(names)) != len(names):
        raise ModelFormatError("feature names must be distinct")
    l2_lambda = _number(document.get("l2_lambda"), "l2_lambda")
    if l2_lambda < 0:
        raise ModelFormatError("l2_lambda must not be negative")
    return RidgeModel(features, _number(document.get("intercept"), "intercept"), l2_lambda)


# -- fitting --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitResult:
    model: RidgeModel
    metrics: dict[str, Any]


def _feature_kinds(events: Sequence[LearningEvent]) -> dict[str, type]:
    kinds: dict[str, type] = {}
    for event in events:
        for name, value in event.features.items():
            kind = str if isinstance(value, str) else float
            if kinds.setdefault(name, kind) is not kind:
                raise TrainingError(f"feature {name!r} mixes numbers and strings")
    return kinds


def _encoding(
    kinds: Mapping[str, type], rows: Sequence[Mapping[str, FeatureValue]]
) -> list[Feature]:
    """The features of ``rows`` with their standardisation and categories (no coefficients)."""
    present = sorted({name for row in rows for name in row})
    specs: list[Feature] = []
    for name in present:
        if kinds[name] is str:
            categories = sorted({str(row[name]) for row in rows if name in row})
            specs.append(CategoricalFeature(name, tuple(categories), ()))
            continue
        values = np.array([float(row[name]) for row in rows if name in row])
        std = float(values.std())
        specs.append(NumericFeature(name, float(values.mean()), std if std > 0 else 1.0, 0.0))
    return specs


def _solve(design: FloatArray, target: FloatArray, l2_lambda: float) -> FloatArray:
    penalty = np.eye(design.shape[1]) * l2_lambda
    penalty[0, 0] = 0.0
    gram = design.T @ design + penalty
    moment = design.T @ target
    try:
        solution = np.linalg.solve(gram, moment)
    except np.linalg.LinAlgError:
        # Only reachable with λ = 0 and collinear columns: take the minimum-norm solution.
        solution = np.linalg.lstsq(gram, moment, rcond=None)[0]
    return np.asarray(solution, dtype=np.float64)


def _with_coefficients(specs: Sequence[Feature], beta: FloatArray, l2_lambda: float) -> RidgeModel:
    features: list[Feature] = []
    position = 1
    for spec in specs:
        if isinstance(spec, NumericFeature):
            features.append(NumericFeature(spec.name, spec.mean, spec.std, float(beta[position])))
            position += 1
        else:
            width = len(spec.categories)
            coefficients = tuple(float(b) for b in beta[position : position + width])
            features.append(CategoricalFeature(spec.name, spec.categories, coefficients))
            position += width
    return RidgeModel(tuple(features), float(beta[0]), l2_lambda)


def regression_metrics(observed: FloatArray, predicted: FloatArray) -> dict[str, float | None]:
    """RMSE, MAE and R² (null when the outcomes do not vary: R² is undefined then)."""
    if observed.size == 0:
        return {"rmse": None, "mae": None, "r2": None}
    residual = observed - predicted
    total = float(((observed - observed.mean()) ** 2).sum())
    return {
        "rmse": float(np.sqrt((residual**2).mean())),
        "mae": float(np.abs(residual).mean()),
        "r2": 1.0 - float((residual**2).sum()) / total if total > 0 else None,
    }


def fit_ridge(
    events: Sequence[LearningEvent], *, l2_lambda: float = DEFAULT_L2_LAMBDA
) -> FitResult:
    """Fit on the training split, measure on both splits (see the module docstring)."""
    if not (math.isfinite(l2_lambda) and l2_lambda >= 0):
        raise TrainingError(f"the L2 penalty must be a finite number >= 0, not {l2_lambda}")
    labelled = [event for event in events if event.outcome is not None]
    if not labelled:
        raise TrainingError(f"none of the {len(events)} events has an observed outcome")
    kinds = _feature_kinds(events)
    validation = [event for event in labelled if in_validation_split(event.field_id)]
    train = [event for event in labelled if not in_validation_split(event.field_id)]
    if not train or not validation:
        train, validation = labelled, []

    train_rows = [event.features for event in train]
    specs = _encoding(kinds, train_rows)
    target = np.array([event.outcome for event in train], dtype=np.float64)
    beta = _solve(_encode(specs, train_rows), target, l2_lambda)
    model = _with_coefficients(specs, beta, l2_lambda)
    if not np.all(np.isfinite(model.coefficient_vector())):
        raise TrainingError("the fit did not converge to finite coefficients")

    # Measured with the model's own prediction path: the metrics describe the artifact exactly.
    scores = {
        "train": regression_metrics(target, model.predict_many(train_rows)),
        "validation": regression_metrics(
            np.array([event.outcome for event in validation], dtype=np.float64),
            model.predict_many([event.features for event in validation]),
        ),
    }
    metrics: dict[str, Any] = {
        "model_format": MODEL_FORMAT,
        "l2_lambda": l2_lambda,
        "n_events": len(events),
        "n_without_outcome": len(events) - len(labelled),
        "n_train": len(train),
        "n_validation": len(validation),
        "n_features": len(specs),
    }
    for split, values in scores.items():
        for name, value in values.items():
            metrics[f"{split}_{name}"] = value
    return FitResult(model, metrics)
