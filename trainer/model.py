"""Fitting the ridge model (format ``rai.ridge/v1``, :mod:`domain.ridge`) on a dataset
snapshot: the snapshot's format, the validation split, the fit and its metrics.

Pure: bytes and values in, values out; no I/O, no clock, no randomness.

The fit
-------
The features are encoded as :mod:`domain.ridge` describes. With ``Z = [1 | X]`` and ``y`` the
outcomes, the fit solves ``(ZᵀZ + λP) β = Zᵀy`` in closed form, ``P = diag(0, 1, …, 1)``: the L2
penalty shrinks every coefficient but not the intercept. With λ > 0 the matrix is positive
definite even when one-hot columns and the intercept are collinear. Coefficients are on the
standardised scale, so λ treats every numeric feature alike whatever its unit.

The split
---------
The snapshot is split by :mod:`domain.holdout` (a hash of the field id, fraction configurable,
default 0.2): the model is fitted on the train side only; the holdout side gives the validation
metrics (``validation_*``, measured on fields the model never saw) and is what the bias audit
evaluates. The metrics record the fraction (``holdout_fraction``) so the audit uses the same
split. A snapshot whose every field falls in the holdout cannot be trained on honestly and is
refused; one whose holdout is empty (very few fields) is fitted on all of it with null
validation metrics (and its bias audit will find nothing to evaluate).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from domain.holdout import HoldoutSplit
from domain.ridge import (
    MODEL_FORMAT,
    CategoricalFeature,
    Feature,
    FeatureValue,
    FloatArray,
    NumericFeature,
    RidgeModel,
    design_matrix,
    finite_number,
    refuse_json_constant,
)
from domain.training import DEFAULT_L2_LAMBDA


class SnapshotError(ValueError):
    """The dataset snapshot is not valid JSON Lines of learning events."""


class TrainingError(ValueError):
    """The snapshot is readable but no model can be fitted on it."""


@dataclass(frozen=True)
class LearningEvent:
    """One line of a dataset snapshot. ``outcome`` is None when it was not observed yet."""

    season_id: str
    field_id: str
    features: Mapping[str, FeatureValue]
    outcome: float | None


# -- the snapshot ---------------------------------------------------------------------------


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
        number = finite_number(item)
        if number is not None:
            features[name] = number
        elif isinstance(item, str):
            features[name] = item
        else:
            raise SnapshotError(
                f"line {line}: feature {name!r} must be a finite number or a string"
            )
    raw_outcome = value.get("outcome")
    outcome = finite_number(raw_outcome)
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
            value = json.loads(line, parse_constant=refuse_json_constant)
        except ValueError as exc:
            raise SnapshotError(f"line {number}: not JSON: {exc}") from None
        events.append(_parse_event(value, number))
    return events


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
    events: Sequence[LearningEvent],
    *,
    l2_lambda: float = DEFAULT_L2_LAMBDA,
    holdout: HoldoutSplit | None = None,
) -> FitResult:
    """Fit on the train side of ``holdout`` (default split if None), measure on both sides
    (see the module docstring)."""
    if not (math.isfinite(l2_lambda) and l2_lambda >= 0):
        raise TrainingError(f"the L2 penalty must be a finite number >= 0, not {l2_lambda}")
    labelled = [event for event in events if event.outcome is not None]
    if not labelled:
        raise TrainingError(f"none of the {len(events)} events has an observed outcome")
    kinds = _feature_kinds(events)
    split = holdout or HoldoutSplit()
    validation = [event for event in labelled if split.is_holdout(event.field_id)]
    train = [event for event in labelled if not split.is_holdout(event.field_id)]
    if not train:
        raise TrainingError(
            f"all {len(labelled)} labelled events fall in the holdout (fraction"
            f" {split.fraction}): nothing the audit would not also see to train on"
        )

    train_rows = [event.features for event in train]
    specs = _encoding(kinds, train_rows)
    target = np.array([event.outcome for event in train], dtype=np.float64)
    beta = _solve(design_matrix(specs, train_rows), target, l2_lambda)
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
        "holdout_fraction": split.fraction,
        "n_features": len(specs),
    }
    for side, values in scores.items():
        for name, value in values.items():
            metrics[f"{side}_{name}"] = value
    return FitResult(model, metrics)
