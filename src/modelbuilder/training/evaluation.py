"""Classification metrics on validation predictions (numpy only, so any process can compute them).

``evaluate`` returns a JSON-ready dict: micro accuracy, macro accuracy (ML.NET's MacroAccuracy:
the mean of per-class recall over the classes present), log loss, per-class precision / recall / F1,
the confusion matrix and the most confidently wrong images. Classes that never occur or are never
predicted get 0.0, never NaN, and no warnings are raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import InvalidParameterError

# Row sums of "probabilities" may drift this far from 1 (float16 / float32 softmax) and are renormalised.
_SUM_TOLERANCE = 1e-2
_MATRIX_INDEX_LABELS_ABOVE = 12
_LABEL_WIDTH = 20


def _invalid(name: str, expected: str, got: object, hint: str | None = None) -> InvalidParameterError:
    return InvalidParameterError(
        f"The '{name}' parameter of evaluate must be {expected}. Got {got} instead.", hint=hint
    )


def _check_inputs(
    y_true: np.ndarray, probabilities: np.ndarray, labels: Sequence[str], paths: Sequence[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true)
    probs = np.asarray(probabilities, dtype=np.float64)
    classes = len(labels)
    if classes < 1:
        raise _invalid("labels", "a non-empty list of label names", list(labels))
    if probs.ndim != 2 or probs.shape[1] != classes:
        raise _invalid("probabilities", f"an array of shape (n_samples, {classes})", f"shape {probs.shape}")
    if truth.ndim != 1 or truth.shape[0] != probs.shape[0]:
        raise _invalid("y_true", f"a 1-D array of {probs.shape[0]} class indices", f"shape {truth.shape}")
    if truth.shape[0] == 0:
        raise _invalid(
            "y_true", "at least one sample", "0 samples", hint="Evaluate on non-empty validation data."
        )
    if not np.issubdtype(truth.dtype, np.integer):
        if not np.issubdtype(truth.dtype, np.floating) or not np.all(np.equal(np.mod(truth, 1), 0)):
            raise _invalid("y_true", "integer class indices", f"dtype {truth.dtype}")
    truth = truth.astype(np.int64)
    if truth.min() < 0 or truth.max() >= classes:
        raise _invalid(
            "y_true", f"class indices in [0, {classes - 1}]", f"values from {truth.min()} to {truth.max()}"
        )
    if not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise _invalid(
            "probabilities",
            "finite, non-negative probabilities",
            "NaN, infinite or negative values",
            hint="Pass softmax(logits), not the logits.",
        )
    sums = probs.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > _SUM_TOLERANCE):
        worst = float(sums[np.argmax(np.abs(sums - 1.0))])
        raise _invalid(
            "probabilities",
            "rows that sum to 1",
            f"a row summing to {worst:.4g}",
            hint="Pass softmax(logits).",
        )
    if paths is not None and len(paths) != truth.shape[0]:
        raise _invalid("paths", f"a list of {truth.shape[0]} paths (one per sample)", f"{len(paths)} paths")
    return truth, probs / sums[:, None]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def log_loss(y_true: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean negative log-probability of the true class (lower is better)."""
    eps = float(np.finfo(np.float64).eps)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], eps, 1.0))))


def validation_rank(y_true: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """How models are compared on the validation split: accuracy first, then log loss.

    Accuracy alone cannot rank models that tie on it, which happens whenever the validation images
    are easy (a photo's crops: every trial scores 100%); the log loss, a proper score, still tells the
    better-calibrated model apart.
    """
    if len(y_true) == 0:
        return (0.0, 0.0)
    accuracy = float((probabilities.argmax(1) == y_true).mean())
    return (accuracy, -log_loss(y_true, probabilities))


#: ``params`` key of an ensemble kept because the validation split could not rank its members: every
#: one scored 100% (``trials.ensemble.saturated_tie``).
TIE_PARAM = "saturated_tie"


def selection_rank(val_accuracy: float, params: dict[str, Any], y_true: np.ndarray,
                   probabilities: np.ndarray) -> tuple[float, bool, float]:
    """How the final model is chosen among finished trials: accuracy, then an ensemble kept for a
    saturated tie (its members tie with it on accuracy and beat it on a log loss that cannot rank
    them: it averages their confidence), then the log loss (``validation_rank``)."""
    tie = bool(params.get(TIE_PARAM, False))
    if probabilities.ndim != 2 or len(probabilities) != len(y_true) or len(y_true) == 0:
        return (val_accuracy, tie, -float("inf"))
    return (val_accuracy, tie, validation_rank(y_true, probabilities)[1])


def evaluate(
    y_true: np.ndarray,
    probabilities: np.ndarray,
    labels: list[str],
    paths: list[str] | None = None,
    top_wrong: int = 10,
) -> dict[str, Any]:
    """Metrics of predicted class probabilities against the true class indices.

    Args:
        y_true: shape (n,), the true class index of each sample.
        probabilities: shape (n, len(labels)), each row a probability distribution.
        labels: the class names, in index order.
        paths: the image of each sample (for the most confidently wrong list).
        top_wrong: how many confidently wrong samples to list.

    Returns:
        A JSON-serialisable dict: ``accuracy``, ``macro_accuracy``, ``log_loss``, ``per_class``
        (label, precision, recall, f1, support), ``confusion_matrix`` (labels, matrix with rows =
        true and columns = predicted), ``most_confidently_wrong`` (path, true_label,
        predicted_label, score, index; highest score first), ``num_samples``.

    Raises:
        InvalidParameterError: shapes disagree, indices are out of range, or rows are not
            probabilities.
    """
    truth, probs = _check_inputs(y_true, probabilities, labels, paths)
    classes = len(labels)
    count = truth.shape[0]
    predicted = probs.argmax(axis=1)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted_counts = matrix.sum(axis=0)
    per_class = []
    for index, label in enumerate(labels):
        precision = _ratio(true_positives[index], predicted_counts[index])
        recall = _ratio(true_positives[index], support[index])
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class.append(
            {
                "label": label,
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "support": int(support[index]),
            }
        )
    present = support > 0
    macro_accuracy = float(np.mean(true_positives[present] / support[present]))
    loss = log_loss(truth, probs)
    return {
        "num_samples": int(count),
        "accuracy": float(true_positives.sum() / count),
        "macro_accuracy": macro_accuracy,
        "log_loss": loss,
        "per_class": per_class,
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
        "most_confidently_wrong": _most_confidently_wrong(truth, predicted, probs, labels, paths, top_wrong),
    }


def _most_confidently_wrong(
    truth: np.ndarray,
    predicted: np.ndarray,
    probs: np.ndarray,
    labels: Sequence[str],
    paths: Sequence[str] | None,
    top_wrong: int,
) -> list[dict[str, Any]]:
    wrong = np.flatnonzero(truth != predicted)
    if top_wrong <= 0 or wrong.size == 0:
        return []
    scores = probs[wrong, predicted[wrong]]
    # Stable sort on -score keeps sample order among equal scores, so the list is deterministic.
    order = wrong[np.argsort(-scores, kind="stable")][:top_wrong]
    return [
        {
            "index": int(i),
            "path": None if paths is None else str(paths[i]),
            "true_label": labels[truth[i]],
            "predicted_label": labels[predicted[i]],
            "score": float(probs[i, predicted[i]]),
        }
        for i in order
    ]


def _short(label: str, width: int = _LABEL_WIDTH) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def format_evaluation(evaluation: dict[str, Any]) -> str:
    """A readable multi-line summary of ``evaluate``'s result: totals, a per-class table, the
    confusion matrix (columns numbered when there are many classes) and the confidently wrong images."""
    lines = [
        f"Accuracy {evaluation['accuracy']:.2%}   Macro accuracy {evaluation['macro_accuracy']:.2%}   "
        f"Log loss {evaluation['log_loss']:.4f}   ({evaluation['num_samples']} images)",
        "",
    ]
    rows = evaluation["per_class"]
    width = max([5] + [len(_short(row["label"])) for row in rows])
    lines.append(f"{'Label':<{width}}  Precision  Recall     F1  Support")
    for row in rows:
        lines.append(
            f"{_short(row['label']):<{width}}  {row['precision']:>9.3f}  {row['recall']:>6.3f}  "
            f"{row['f1']:>5.3f}  {row['support']:>7d}"
        )
    lines += ["", "Confusion matrix (rows: true label, columns: predicted label)"]
    lines += _format_matrix(
        evaluation["confusion_matrix"]["labels"], evaluation["confusion_matrix"]["matrix"]
    )
    wrong = evaluation.get("most_confidently_wrong") or []
    if wrong:
        lines += ["", "Most confidently wrong"]
        for entry in wrong:
            where = entry["path"] if entry.get("path") is not None else f"#{entry['index']}"
            lines.append(
                f"  {entry['score']:.1%}  {entry['predicted_label']} (true: {entry['true_label']})  {where}"
            )
    return "\n".join(lines)


def _format_matrix(labels: Sequence[str], matrix: Sequence[Sequence[int]]) -> list[str]:
    numbered = len(labels) > _MATRIX_INDEX_LABELS_ABOVE
    names = [f"{i}:{_short(label, 12)}" if numbered else _short(label, 12) for i, label in enumerate(labels)]
    heads = [str(i) for i in range(len(labels))] if numbered else names
    biggest = max((value for row in matrix for value in row), default=0)
    cell = max(len(str(biggest)), *(len(head) for head in heads))
    row_width = max(len(name) for name in names)
    lines = [" " * row_width + "  " + " ".join(f"{head:>{cell}}" for head in heads)]
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"{name:<{row_width}}  " + " ".join(f"{value:>{cell}d}" for value in row))
    return lines
