"""The model artifact, format ``rai.ridge/v1``: a fitted ridge regression of a learning event's
outcome on its features, its bytes, loading them, and prediction.

Pure: bytes and values in, values out; no I/O, no clock, no randomness. The trainer
(``trainer.model``) fits models and writes them as artifacts; the platform loads artifacts to
evaluate them (``services.evaluation``).

The encoding
------------
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

A prediction is the correctly rounded sum (``math.fsum``) of the intercept and each coefficient
times its encoded value: the result does not depend on summation order or on a BLAS library.
The artifact is the canonical JSON (``domain.canonical``) of :meth:`RidgeModel.to_document`;
floats round-trip exactly through JSON, so :func:`load_model` of the bytes predicts bit for bit
what the fitted model predicted, on any machine.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from domain.canonical import canonical_json

MODEL_FORMAT: Final = "rai.ridge/v1"

FeatureValue = float | str
FloatArray = npt.NDArray[np.float64]


class ModelFormatError(ValueError):
    """Bytes that are not a ``rai.ridge/v1`` artifact."""


def refuse_json_constant(name: str) -> float:
    """``json.loads(..., parse_constant=refuse_json_constant)``: NaN and Infinity are not JSON."""
    raise ValueError(f"{name} is not a JSON number")


def finite_number(value: object) -> float | None:
    """``value`` as a float if it is a finite JSON number (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


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
    number = finite_number(value)
    if number is None:
        raise ValueError(f"feature {feature.name!r} is numeric, not {value!r}")
    return number


def _category_value(feature: CategoricalFeature, value: FeatureValue | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"feature {feature.name!r} is categorical, not {value!r}")


def design_matrix(
    specs: Sequence[Feature], rows: Sequence[Mapping[str, FeatureValue]]
) -> FloatArray:
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
    number = finite_number(value)
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
        document = json.loads(data, parse_constant=refuse_json_constant)
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
