"""evaluate / format_evaluation: hand-computed values, edge cases, and agreement with scikit-learn."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest

from modelbuilder.errors import InvalidParameterError
from modelbuilder.training.evaluation import evaluate, format_evaluation

LABELS = ["cat", "dog", "bird"]
# true:  cat  dog  dog  bird cat
# pred:  cat  dog  cat  bird cat
Y_TRUE = np.array([0, 1, 1, 2, 0])
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.6, 0.3, 0.1],
        [0.2, 0.2, 0.6],
        [0.5, 0.4, 0.1],
    ]
)
PATHS = ["c1.png", "d1.png", "d2.png", "b1.png", "c2.png"]


def test_hand_computed_example() -> None:
    result = evaluate(Y_TRUE, PROBS, LABELS, paths=PATHS)
    assert result["num_samples"] == 5
    assert result["accuracy"] == pytest.approx(4 / 5)
    assert result["macro_accuracy"] == pytest.approx((1.0 + 0.5 + 1.0) / 3)
    expected_loss = -(math.log(0.7) + math.log(0.8) + math.log(0.3) + math.log(0.6) + math.log(0.5)) / 5
    assert result["log_loss"] == pytest.approx(expected_loss)
    cat, dog, bird = result["per_class"]
    assert cat == {
        "label": "cat",
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert dog == {"label": "dog", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert bird == {"label": "bird", "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert result["confusion_matrix"] == {"labels": LABELS, "matrix": [[2, 0, 0], [1, 1, 0], [0, 0, 1]]}
    assert result["most_confidently_wrong"] == [
        {
            "index": 2,
            "path": "d2.png",
            "true_label": "dog",
            "predicted_label": "cat",
            "score": pytest.approx(0.6),
        }
    ]


def test_result_is_json_serialisable() -> None:
    result = evaluate(Y_TRUE.astype(np.int32), PROBS.astype(np.float32), LABELS)
    assert json.loads(json.dumps(result))["confusion_matrix"]["matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert result["most_confidently_wrong"][0]["path"] is None


def test_classes_without_support_or_predictions_give_zeros_not_nan() -> None:
    labels = ["a", "b", "c", "d"]
    y_true = np.array([0, 0, 1, 1])  # c and d never occur
    probs = np.array(
        [[0.9, 0.05, 0.05, 0.0], [0.2, 0.1, 0.7, 0.0], [0.1, 0.8, 0.1, 0.0], [0.1, 0.8, 0.1, 0.0]]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = evaluate(y_true, probs, labels)
        text = format_evaluation(result)
    by_label = {row["label"]: row for row in result["per_class"]}
    assert by_label["c"] == {
        "label": "c",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }  # predicted once
    assert by_label["d"] == {
        "label": "d",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }  # never seen
    assert result["macro_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # over the classes present
    assert all(
        not math.isnan(row[key]) for row in result["per_class"] for key in ("precision", "recall", "f1")
    )
    assert "nan" not in text.lower()


def test_zero_probability_for_the_true_class_gives_a_finite_log_loss() -> None:
    result = evaluate(np.array([0, 1]), np.array([[0.0, 1.0], [0.0, 1.0]]), ["a", "b"])
    assert math.isfinite(result["log_loss"])
    assert result["log_loss"] == pytest.approx(-math.log(np.finfo(np.float64).eps) / 2)


def test_most_confidently_wrong_is_sorted_and_limited() -> None:
    y_true = np.zeros(6, dtype=int)
    wrong_scores = [0.55, 0.9, 0.7, 0.8, 0.6]
    probs = np.array([[0.9, 0.1]] + [[1 - s, s] for s in wrong_scores])
    paths = [f"img{i}.png" for i in range(6)]
    result = evaluate(y_true, probs, ["ok", "other"], paths=paths, top_wrong=3)
    listed = result["most_confidently_wrong"]
    assert [entry["path"] for entry in listed] == ["img2.png", "img4.png", "img3.png"]
    assert [entry["score"] for entry in listed] == pytest.approx([0.9, 0.8, 0.7])
    assert evaluate(y_true, probs, ["ok", "other"], top_wrong=0)["most_confidently_wrong"] == []


def test_rows_close_to_one_are_renormalised() -> None:
    probs = PROBS * 1.004  # e.g. a float16 softmax
    result = evaluate(Y_TRUE, probs, LABELS)
    assert result["log_loss"] == pytest.approx(evaluate(Y_TRUE, PROBS, LABELS)["log_loss"])


@pytest.mark.parametrize(
    ("y_true", "probs", "labels", "paths", "message"),
    [
        pytest.param(
            Y_TRUE,
            PROBS[:, :2],
            LABELS,
            None,
            "'probabilities' parameter of evaluate must be an array of shape (n_samples, 3)",
            id="columns",
        ),
        pytest.param(
            Y_TRUE[:4],
            PROBS,
            LABELS,
            None,
            "'y_true' parameter of evaluate must be a 1-D array of 5",
            id="rows",
        ),
        pytest.param(
            np.array([0, 1, 1, 3, 0]), PROBS, LABELS, None, "class indices in [0, 2]", id="index-range"
        ),
        pytest.param(Y_TRUE, np.log(PROBS), LABELS, None, "finite, non-negative probabilities", id="logits"),
        pytest.param(Y_TRUE, PROBS * 2, LABELS, None, "rows that sum to 1. Got a row summing to 2", id="sum"),
        pytest.param(Y_TRUE, PROBS, LABELS, ["a.png"], "a list of 5 paths", id="paths"),
        pytest.param(np.zeros(0, int), np.zeros((0, 3)), LABELS, None, "at least one sample", id="empty"),
        pytest.param(
            np.array([0.5, 1, 1, 2, 0]), PROBS, LABELS, None, "integer class indices", id="float-labels"
        ),
        pytest.param(Y_TRUE, PROBS, [], None, "non-empty list of label names", id="no-labels"),
    ],
)
def test_invalid_inputs(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], paths: list[str] | None, message: str
) -> None:
    with pytest.raises(InvalidParameterError) as caught:
        evaluate(y_true, probs, labels, paths=paths)
    assert message in str(caught.value)


def test_logits_error_hints_at_softmax() -> None:
    with pytest.raises(InvalidParameterError) as caught:
        evaluate(Y_TRUE, np.log(PROBS), LABELS)
    assert caught.value.hint == "Pass softmax(logits), not the logits."


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scikit_learn(seed: int) -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(seed)
    classes, count = 5, 200
    y_true = rng.integers(0, classes - 1, count)  # the last class never occurs
    logits = rng.normal(size=(count, classes)) + 2.0 * np.eye(classes)[y_true]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = [f"c{i}" for i in range(classes)]
    result = evaluate(y_true, probs, labels)
    y_pred = probs.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the class that never occurs
        balanced = metrics.balanced_accuracy_score(y_true, y_pred)
    assert result["macro_accuracy"] == pytest.approx(balanced)
    assert result["log_loss"] == pytest.approx(metrics.log_loss(y_true, probs, labels=list(range(classes))))
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=list(range(classes)), zero_division=0
    )
    assert [row["precision"] for row in result["per_class"]] == pytest.approx(precision)
    assert [row["recall"] for row in result["per_class"]] == pytest.approx(recall)
    assert [row["f1"] for row in result["per_class"]] == pytest.approx(f1)
    assert [row["support"] for row in result["per_class"]] == support.tolist()
    expected_matrix = metrics.confusion_matrix(y_true, y_pred, labels=list(range(classes))).tolist()
    assert result["confusion_matrix"]["matrix"] == expected_matrix


def test_format_evaluation_small() -> None:
    text = format_evaluation(evaluate(Y_TRUE, PROBS, LABELS, paths=PATHS))
    lines = text.splitlines()
    assert lines[0].startswith("Accuracy 80.00%   Macro accuracy 83.33%   Log loss 0.5976")
    assert "(5 images)" in lines[0]
    assert any(line.split() == ["cat", "0.667", "1.000", "0.800", "2"] for line in lines)
    assert any(line.split() == ["cat", "dog", "bird"] for line in lines)  # matrix header
    assert any(line.split() == ["dog", "1", "1", "0"] for line in lines)  # matrix row
    assert "60.0%  cat (true: dog)  d2.png" in text


def test_format_evaluation_many_classes_numbers_the_columns() -> None:
    classes = 15
    labels = [f"a-rather-long-label-name-{i}" for i in range(classes)]
    result = evaluate(np.arange(classes), np.eye(classes), labels)
    lines = format_evaluation(result).splitlines()
    header = next(line for line in lines if line.split()[:3] == ["0", "1", "2"])
    assert header.split() == [str(i) for i in range(classes)]
    assert any(line.startswith("14:a-rather-lo…") for line in lines)
    assert "Most confidently wrong" not in "\n".join(lines)
    assert all(len(line) < 120 for line in lines)
