"""The ridge model: fitting, the artifact, prediction, the split, the snapshot format."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import pytest

from domain.canonical import canonical_json
from domain.holdout import HoldoutSplit
from domain.ridge import (
    MODEL_FORMAT,
    CategoricalFeature,
    ModelFormatError,
    NumericFeature,
    load_model,
)
from trainer.model import (
    LearningEvent,
    SnapshotError,
    TrainingError,
    fit_ridge,
    parse_snapshot,
)

# The trainer's validation side is the default holdout of domain.holdout.
in_validation_split = HoldoutSplit().is_holdout

pytestmark = pytest.mark.unit

SOIL = {"clay": -1.0, "loam": 0.5, "sand": 2.0}


def _events(n: int, *, noise: float = 0.01, seed: int = 3) -> list[LearningEvent]:
    """outcome = 5 + 2 x1 - 3 x2 + soil effect (+ noise); x1 ~ N(10, 3), x2 ~ N(0, 1)."""
    rng = np.random.default_rng(seed)
    events = []
    for i in range(n):
        x1, x2 = float(rng.normal(10, 3)), float(rng.normal(0, 1))
        soil = list(SOIL)[int(rng.integers(3))]
        outcome = 5 + 2 * x1 - 3 * x2 + SOIL[soil] + float(rng.normal(0, noise))
        events.append(LearningEvent("s", f"field-{i}", {"x1": x1, "x2": x2, "soil": soil}, outcome))
    return events


def test_the_fit_recovers_known_coefficients() -> None:
    model = fit_ridge(_events(4000)).model
    base: dict[str, float | str] = {"x1": 10.0, "x2": 0.0, "soil": "clay"}
    predict = model.predict
    assert predict({**base, "x1": 11.0}) - predict(base) == pytest.approx(2.0, abs=0.01)
    assert predict({**base, "x2": 1.0}) - predict(base) == pytest.approx(-3.0, abs=0.01)
    assert predict({**base, "soil": "sand"}) - predict(base) == pytest.approx(3.0, abs=0.02)
    assert predict({**base, "soil": "loam"}) - predict(base) == pytest.approx(1.5, abs=0.02)
    assert predict(base) == pytest.approx(5 + 20 - 1, abs=0.02)


def test_without_penalty_the_fit_is_ordinary_least_squares() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(50, 10, size=(200, 2))
    y = 1.5 + x @ np.array([0.7, -0.2]) + rng.normal(0, 1, 200)
    events = [
        LearningEvent("s", f"f{i}", {"a": float(x[i, 0]), "b": float(x[i, 1])}, float(y[i]))
        for i in range(200)
    ]
    fit = fit_ridge(events, l2_lambda=0.0)
    train = [i for i in range(200) if not in_validation_split(f"f{i}")]
    design = np.column_stack([np.ones(len(train)), x[train]])
    ols = np.linalg.lstsq(design, y[train], rcond=None)[0]
    probe = {"a": 42.0, "b": 61.0}
    assert fit.model.predict(probe) == pytest.approx(ols[0] + 42.0 * ols[1] + 61.0 * ols[2])


def test_the_intercept_is_not_penalised() -> None:
    events = _events(500, noise=1.0)
    fit = fit_ridge(events, l2_lambda=1e12)
    train = [e.outcome for e in events if not in_validation_split(e.field_id) and e.outcome]
    assert fit.model.intercept == pytest.approx(float(np.mean(train)))
    assert np.abs(fit.model.coefficient_vector()[1:]).max() < 1e-6


def test_numeric_features_are_standardised_with_training_statistics() -> None:
    model = fit_ridge(_events(1000)).model
    [soil, x1, x2] = model.features
    assert isinstance(x1, NumericFeature)
    assert isinstance(x2, NumericFeature)
    assert x1.mean == pytest.approx(10, abs=0.3)
    assert x1.std == pytest.approx(3, abs=0.3)
    assert isinstance(soil, CategoricalFeature)
    assert soil.categories == ("clay", "loam", "sand")


def test_a_constant_feature_gets_unit_scale() -> None:
    events = [LearningEvent("s", f"f{i}", {"c": 7.0, "x": float(i)}, 2.0 * i) for i in range(50)]
    model = fit_ridge(events).model
    constant = model.features[0]
    assert isinstance(constant, NumericFeature)
    assert (constant.mean, constant.std, constant.coefficient) == (7.0, 1.0, 0.0)


def test_unknown_or_missing_categories_contribute_nothing() -> None:
    model = fit_ridge(_events(500)).model
    base = {"x1": 10.0, "x2": 0.0}
    assert model.predict({**base, "soil": "peat"}) == model.predict(base)
    # The numeric columns at these values; the soil block is all zeros.
    numeric = [
        feature.coefficient * (base[feature.name] - feature.mean) / feature.std
        for feature in model.features
        if isinstance(feature, NumericFeature)
    ]
    expected = model.intercept + sum(numeric)
    assert model.predict({**base, "soil": "peat"}) == pytest.approx(expected)


def test_a_missing_numeric_feature_counts_as_its_mean() -> None:
    model = fit_ridge(_events(500)).model
    x1 = next(f for f in model.features if f.name == "x1")
    assert isinstance(x1, NumericFeature)
    row: dict[str, float | str] = {"x2": 0.5, "soil": "loam"}
    assert model.predict(row) == model.predict({**row, "x1": x1.mean})


def test_prediction_refuses_a_value_of_the_wrong_kind() -> None:
    model = fit_ridge(_events(100)).model
    with pytest.raises(ValueError, match="numeric"):
        model.predict({"x1": "ten"})
    with pytest.raises(ValueError, match="categorical"):
        model.predict({"soil": 3.0})


def test_predictions_round_trip_through_the_artifact() -> None:
    fit = fit_ridge(_events(600))
    artifact = fit.model.to_bytes()
    loaded = load_model(artifact)
    assert loaded == fit.model
    rows = [event.features for event in _events(50, seed=9)]
    assert list(loaded.predict_many(rows)) == list(fit.model.predict_many(rows))
    assert [loaded.predict(row) for row in rows] == list(fit.model.predict_many(rows))


def test_the_artifact_is_canonical_and_complete() -> None:
    fit = fit_ridge(_events(300))
    artifact = fit.model.to_bytes()
    document = json.loads(artifact)
    assert canonical_json(document) == artifact
    assert fit_ridge(_events(300)).model.to_bytes() == artifact, "same data, same bytes"
    assert document["format"] == MODEL_FORMAT == "rai.ridge/v1"
    assert document["l2_lambda"] == 1.0
    assert isinstance(document["intercept"], float)
    assert [f["name"] for f in document["features"]] == ["soil", "x1", "x2"]
    assert document["features"][0]["kind"] == "categorical"
    assert set(document["features"][0]) == {"name", "kind", "categories", "coefficients"}
    assert set(document["features"][1]) == {"name", "kind", "mean", "std", "coefficient"}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format="rai.ridge/v2"), "not a rai.ridge/v1"),
        (lambda d: d.update(intercept="1"), "intercept"),
        (lambda d: d.update(l2_lambda=-1.0), "l2_lambda"),
        (lambda d: d["features"][1].update(std=0.0), "std"),
        (lambda d: d["features"][0].update(categories=["sand", "clay", "loam"]), "sorted"),
        (lambda d: d["features"][0].update(coefficients=[1.0]), "match"),
        (lambda d: d["features"][1].update(kind="ordinal"), "kind"),
        (lambda d: d["features"][2].update(name="x1"), "distinct"),
    ],
)
def test_a_malformed_artifact_is_refused(mutate: Any, message: str) -> None:
    document = fit_ridge(_events(100)).model.to_document()
    mutate(document)
    with pytest.raises(ModelFormatError, match=message):
        load_model(json.dumps(document).encode())


def test_an_artifact_with_nan_is_refused() -> None:
    with pytest.raises(ModelFormatError, match="not JSON"):
        load_model(b'{"format": "rai.ridge/v1", "intercept": NaN}')


def test_the_split_hashes_the_field_id() -> None:
    def expected(field_id: str) -> bool:
        digest = hashlib.sha256(field_id.encode()).digest()
        return int.from_bytes(digest[:8], "big") % 10_000 < 2_000

    ids = [f"field-{i}" for i in range(20_000)]
    held_out = [in_validation_split(field_id) for field_id in ids]
    assert held_out == [expected(field_id) for field_id in ids]
    assert sum(held_out) / len(ids) == pytest.approx(0.20, abs=0.01)


def test_every_season_of_a_field_falls_on_the_same_side() -> None:
    events = [
        LearningEvent(f"season-{s}", f"field-{f}", {"x": float(s + f)}, float(s))
        for f in range(100)
        for s in range(4)
    ]
    metrics = fit_ridge(events).metrics
    validation_fields = sum(in_validation_split(f"field-{f}") for f in range(100))
    assert metrics["n_validation"] == 4 * validation_fields
    assert metrics["n_train"] == 4 * (100 - validation_fields)


def test_metrics() -> None:
    events = _events(1000, noise=0.5)
    unlabelled = [LearningEvent("s", "field-x", {"x1": 1.0}, None)] * 7
    metrics = fit_ridge(events + unlabelled).metrics
    assert metrics["n_events"] == 1007
    assert metrics["n_without_outcome"] == 7
    assert metrics["n_train"] + metrics["n_validation"] == 1000
    assert 0 < metrics["n_validation"] < 300
    assert metrics["n_features"] == 3
    assert metrics["train_rmse"] == pytest.approx(0.5, abs=0.05)
    assert metrics["validation_rmse"] == pytest.approx(0.5, abs=0.1)
    assert metrics["validation_mae"] < metrics["validation_rmse"]
    assert metrics["train_r2"] > 0.99
    assert metrics["validation_r2"] > 0.99
    assert canonical_json(metrics)  # finite, JSON-able as it stands


def test_too_few_fields_to_split_fits_on_everything() -> None:
    field = next(f"f{i}" for i in range(100) if not in_validation_split(f"f{i}"))
    events = [LearningEvent(f"s{i}", field, {"x": float(i)}, float(i)) for i in range(10)]
    metrics = fit_ridge(events).metrics
    assert (metrics["n_train"], metrics["n_validation"]) == (10, 0)
    assert metrics["validation_rmse"] is None
    assert metrics["validation_r2"] is None


def test_the_model_never_trains_on_a_held_out_field() -> None:
    events = [
        LearningEvent("s", f"field-{f}", {"x": float(f)}, float(2 * f + 1)) for f in range(200)
    ]
    for fraction in (0.1, 0.5):
        split = HoldoutSplit(fraction)
        metrics = fit_ridge(events, holdout=split).metrics
        held_out = sum(split.is_holdout(f"field-{f}") for f in range(200))
        assert (metrics["n_train"], metrics["n_validation"]) == (200 - held_out, held_out)
        assert metrics["holdout_fraction"] == fraction
    # the fitted model is a function of the train side alone: changing every held-out outcome
    # changes nothing in it
    split = HoldoutSplit(0.3)
    moved = [
        LearningEvent(e.season_id, e.field_id, e.features, 1e6)
        if split.is_holdout(e.field_id)
        else e
        for e in events
    ]
    assert fit_ridge(events, holdout=split).model == fit_ridge(moved, holdout=split).model


def test_a_snapshot_entirely_in_the_holdout_is_refused() -> None:
    field = next(f"f{i}" for i in range(100) if in_validation_split(f"f{i}"))
    events = [LearningEvent(f"s{i}", field, {"x": float(i)}, float(i)) for i in range(10)]
    with pytest.raises(TrainingError, match="fall in the holdout"):
        fit_ridge(events)


def test_r2_is_null_when_the_outcome_never_varies() -> None:
    events = [LearningEvent("s", f"f{i}", {"x": float(i)}, 3.0) for i in range(100)]
    metrics = fit_ridge(events).metrics
    assert metrics["train_r2"] is None
    assert metrics["train_rmse"] == pytest.approx(0.0, abs=1e-9)


def test_nothing_to_learn_from() -> None:
    with pytest.raises(TrainingError, match="none of the 2 events has an observed outcome"):
        fit_ridge([LearningEvent("s", "f", {"x": 1.0}, None)] * 2)
    with pytest.raises(TrainingError, match="mixes numbers and strings"):
        fit_ridge(
            [LearningEvent("s", "f", {"x": 1.0}, 1.0), LearningEvent("s", "g", {"x": "a"}, 2.0)]
        )
    with pytest.raises(TrainingError, match="L2 penalty"):
        fit_ridge(_events(10), l2_lambda=float("nan"))


def test_a_snapshot_is_parsed_line_by_line() -> None:
    data = (
        b'{"season_id": "2024", "field_id": "f1", "features": {"rain": 3, "soil": "clay"},'
        b' "outcome": 4.5, "attributes": {"region": "north"}}\n'
        b"\n"
        b'{"season_id": "2024", "field_id": "f2", "features": {"rain": 1.5}, "outcome": null}\n'
        b'{"season_id": "2024", "field_id": "f3", "features": {}}'
    )
    assert parse_snapshot(data) == [
        LearningEvent("2024", "f1", {"rain": 3.0, "soil": "clay"}, 4.5),
        LearningEvent("2024", "f2", {"rain": 1.5}, None),
        LearningEvent("2024", "f3", {}, None),
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[1, 2]", "line 2: a learning event must be a JSON object"),
        (b'{"season_id": "s", "features": {}}', "line 2: field_id must be a non-empty string"),
        (b'{"season_id": "s", "field_id": "f"}', "line 2: features must be an object"),
        (b'{"season_id": "s", "field_id": "f", "features": {"x": true}}', "feature 'x'"),
        (b'{"season_id": "s", "field_id": "f", "features": {"x": NaN}}', "line 2: not JSON"),
        (b'{"season_id": "s", "field_id": "f", "features": {}, "outcome": "1"}', "outcome"),
        (b"not json", "line 2: not JSON"),
        (b"\xff", "not UTF-8"),
    ],
)
def test_a_malformed_snapshot_is_refused_with_its_line(line: bytes, message: str) -> None:
    good = b'{"season_id": "s", "field_id": "f", "features": {"x": 1}, "outcome": 1}\n'
    with pytest.raises(SnapshotError, match=message):
        parse_snapshot(good + line + b"\n")
