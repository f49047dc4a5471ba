"""The conventional second opinion: a logistic-regression probe, and its control task.

Control task (Hewitt & Liang 2019): each *type* of input gets a random label, drawn once
with the label distribution of the real task, so a probe can only do well on it by
memorising types. For a pair task the type of a pair is the pair of its tokens' texts
(``(text_i, text_j)``). Selectivity = accuracy(task) - accuracy(control).
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def linear_probe(X_train, y_train, X_test, y_test, seed: int = 0) -> dict:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, C=1.0, random_state=seed))
    model.fit(X_train, y_train)
    return {"train_accuracy": float(model.score(X_train, y_train)),
            "accuracy": float(model.score(X_test, y_test))}


def control_labels(types: list, labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """A random label per distinct type, drawn from the empirical label distribution."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    values, counts = np.unique(labels, return_counts=True)
    table = {}
    for t in types:
        if t not in table:
            table[t] = rng.choice(values, p=counts / counts.sum())
    return np.array([table[t] for t in types])
