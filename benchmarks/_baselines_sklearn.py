"""scikit-learn's best classic model on raw pixels that fits the time budget.

Candidates in the order of their Fashion-MNIST accuracy in the scikit-learn benchmark that ships
with the data set (zalandoresearch/fashion-mnist): SVC with an RBF kernel (~89.7%), gradient
boosting (~88%), random forest (~87%), logistic regression (~84%). Each candidate's fit time is
measured on a small sample and extrapolated (SVC grows ~n^2, the others ~n); the first one whose
estimate fits in what is left of the budget is trained on all the images.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

logger = logging.getLogger("benchmarks")

PROBE_SIZE = 1000


def _candidates(seed: int) -> list[tuple[str, Any, float]]:
    """(name, estimator, fit-time exponent in n)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return [
        ("svc_rbf", SVC(C=10.0, kernel="rbf", gamma="scale"), 2.0),
        ("hist_gradient_boosting", HistGradientBoostingClassifier(max_iter=100, random_state=seed), 1.0),
        ("random_forest", RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed), 1.1),
        ("logistic_regression", LogisticRegression(max_iter=200), 1.0),
    ]


def pixels(images: list[Any], size: int | None = None, mode: str = "L") -> np.ndarray:
    """Flattened pixels scaled to 0..1: in PIL ``mode`` ("L" grey, "RGB"), resized to ``size`` square
    thumbnails when given (raw 160-px photos would give 76,800 columns for a few hundred images)."""
    from PIL import Image

    rows = []
    for path in images:
        with Image.open(path) as img:
            img = img.convert(mode)
            if size is not None:
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            rows.append(np.asarray(img, dtype=np.float32).reshape(-1) / 255.0)
    return np.stack(rows)


def best_classic(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, budget_s: float,
                 seed: int) -> dict[str, Any]:
    """Pick, fit and apply the best candidate that fits ``budget_s`` (probing counts against it)."""
    from sklearn.base import clone

    started = time.monotonic()
    rng = np.random.default_rng(seed)
    n = len(train_x)
    probe = rng.choice(n, size=min(PROBE_SIZE, n), replace=False)
    estimates: dict[str, float] = {}
    chosen = None
    candidates = _candidates(seed)
    for name, estimator, exponent in candidates:
        left = budget_s - (time.monotonic() - started)
        probe_start = time.monotonic()
        clone(estimator).fit(train_x[probe], train_y[probe])
        probe_seconds = time.monotonic() - probe_start
        estimates[name] = round(probe_seconds * (n / len(probe)) ** exponent, 1)
        if estimates[name] <= left - probe_seconds or name == candidates[-1][0]:
            chosen = (name, estimator)
            break
    assert chosen is not None
    name, estimator = chosen
    fit_start = time.monotonic()
    model = clone(estimator).fit(train_x, train_y)
    fit_seconds = time.monotonic() - fit_start
    train_seconds = time.monotonic() - started
    predict_start = time.monotonic()
    predicted = model.predict(test_x)
    return {"predicted": predicted, "model": name, "estimated_fit_seconds": estimates,
            "fit_seconds": round(fit_seconds, 1), "train_seconds": train_seconds,
            "predict_seconds": round(time.monotonic() - predict_start, 1)}
