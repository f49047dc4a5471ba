"""Evaluation metrics of the fine-tuning tasks: ranking (MRR) and token classification.

Ranking follows CodeSearchNet's convention: the rank of the correct candidate is the number
of candidates whose score is *at least* its score (ties count against the model), so a
constant scorer gets the worst rank, a perfect ranker gets 1, a reversed one gets N.

    rank_q = |{j : s_qj >= s_q,c(q)}|,    MRR = mean_q 1 / rank_q
"""
from __future__ import annotations

import numpy as np


def ranks(scores: np.ndarray, correct: np.ndarray | None = None) -> np.ndarray:
    """Rank of the correct candidate per query. ``scores``: [queries, candidates];
    ``correct``: index of each query's correct candidate (default: the diagonal)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"scores must be [queries, candidates], got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinity")
    q = np.arange(scores.shape[0])
    correct = q if correct is None else np.asarray(correct)
    if correct.shape != (scores.shape[0],) or correct.min(initial=0) < 0 or \
            correct.max(initial=0) >= scores.shape[1]:
        raise ValueError("correct must hold one candidate index per query")
    target = scores[q, correct][:, None]
    return (scores >= target).sum(axis=1)


def mrr(scores: np.ndarray, correct: np.ndarray | None = None) -> float:
    """Mean reciprocal rank of the correct candidates (CodeSearchNet tie convention)."""
    return float(np.mean(1.0 / ranks(scores, correct)))


def mean_pairwise_cosine(vectors: np.ndarray) -> float:
    """Mean cosine similarity over pairs i != j of the rows of ``vectors`` [n, dim]: near 1 when
    the embeddings crowd into one direction (anisotropy), near 0 for spread-out ones.

        mean_{i != j} <v_i, v_j> / (|v_i| |v_j|) = (|sum_i u_i|^2 - n) / (n (n - 1)),  u_i = v_i / |v_i|
    """
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or len(v) < 2:
        raise ValueError(f"need at least two vectors [n, dim], got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("a zero vector has no direction")
    u = v / norms
    n = len(u)
    return float(((u.sum(0) ** 2).sum() - n) / (n * (n - 1)))


def effective_rank(vectors: np.ndarray) -> float:
    """How many directions the rows of ``vectors`` [n, dim] spread over, after removing their
    mean (Roy & Vetterli's effective rank): with s_k the singular values of the centred matrix
    and p_k = s_k^2 / sum_j s_j^2 the share of variance along direction k,

        erank = exp(-sum_k p_k log p_k),

    k for variance spread equally over k orthogonal directions, 1 for points on one line.
    Mean-pooled embeddings that collapse into a few directions (low erank) leave a cosine
    ranking few ways to tell functions apart."""
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or len(v) < 2:
        raise ValueError(f"need at least two vectors [n, dim], got shape {v.shape}")
    s = np.linalg.svd(v - v.mean(0), compute_uv=False)
    energy = s ** 2
    if energy.sum() == 0:
        raise ValueError("identical vectors spread over no direction")
    p = energy[energy > 0] / energy.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def mrr_with_distractors(scores: np.ndarray, n_distractors: int, seed: int = 0) -> float:
    """MRR where each query's correct candidate (the diagonal of a square ``scores``) competes
    with ``n_distractors`` others drawn at random from the pool (CodeSearchNet uses 999).
    With fewer candidates than that in the pool, every other candidate is a distractor."""
    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    if scores.shape != (n, n):
        raise ValueError(f"scores must be square [queries, candidates], got {scores.shape}")
    k = min(n_distractors, n - 1)
    rng = np.random.default_rng(seed)
    rr = np.empty(n)
    for qi in range(n):
        others = np.delete(np.arange(n), qi)
        pick = rng.choice(others, size=k, replace=False) if k < n - 1 else others
        row = np.concatenate([[scores[qi, qi]], scores[qi, pick]])
        rr[qi] = 1.0 / (row >= row[0]).sum()
    return float(rr.mean())


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int,
                          common: int = 5) -> dict:
    """Accuracy, macro-F1 over the labels present in ``y_true``, and accuracy on the
    ``common`` most frequent gold labels versus the rest."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError("y_true and y_pred must be 1-D arrays of the same length")
    if len(y_true) == 0:
        raise ValueError("no labelled tokens to score")
    present = np.unique(y_true)
    f1s = []
    for label in present:
        tp = np.sum((y_pred == label) & (y_true == label))
        fp = np.sum((y_pred == label) & (y_true != label))
        fn = np.sum((y_pred != label) & (y_true == label))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    counts = np.bincount(y_true, minlength=n_labels)
    top = np.argsort(-counts, kind="stable")[:common]
    is_common = np.isin(y_true, top)
    correct = y_true == y_pred
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": float(np.mean(f1s)),
        "accuracy_common": float(correct[is_common].mean()) if is_common.any() else float("nan"),
        "accuracy_rare": float(correct[~is_common].mean()) if (~is_common).any() else float("nan"),
    }
