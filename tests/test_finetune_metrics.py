import numpy as np
import pytest

from analysis.finetune import metrics


def test_perfect_ranker_scores_one():
    scores = np.eye(5) * 3 + 0.1
    assert metrics.mrr(scores) == 1.0


def test_reversed_ranker_scores_one_over_n():
    n = 6
    # the correct candidate always has the lowest score of its row
    scores = np.ones((n, n)) - np.eye(n)
    assert metrics.ranks(scores).tolist() == [n] * n
    assert metrics.mrr(scores) == pytest.approx(1 / n)


def test_ties_count_against_the_model():
    scores = np.zeros((4, 4))  # a constant scorer ties everything: worst rank
    assert metrics.mrr(scores) == pytest.approx(1 / 4)
    scores = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 0.0], [0.5, 0.7, 0.6]])
    # query 0 ties with one other (rank 2); query 1 first; query 2 behind one (rank 2)
    assert metrics.ranks(scores).tolist() == [2, 1, 2]
    assert metrics.mrr(scores) == pytest.approx((0.5 + 1 + 0.5) / 3)


def test_explicit_correct_indices():
    scores = np.array([[0.1, 0.9, 0.3], [0.8, 0.2, 0.5]])
    assert metrics.ranks(scores, np.array([1, 2])).tolist() == [1, 2]


def test_distractor_protocol():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 50)) + 10 * np.eye(50)
    assert metrics.mrr_with_distractors(scores, 10) == 1.0
    # with the whole pool as distractors it equals the plain MRR
    noisy = rng.normal(size=(30, 30))
    assert metrics.mrr_with_distractors(noisy, 999) == pytest.approx(metrics.mrr(noisy))
    # fewer distractors make ranking easier on average for a random scorer
    assert metrics.mrr_with_distractors(noisy, 3, seed=1) > metrics.mrr(noisy)


@pytest.mark.parametrize("bad", [np.zeros((2, 0)), np.array([1.0, 2.0]), np.array([[np.nan, 1.0]])])
def test_bad_scores_are_clear_errors(bad):
    with pytest.raises(ValueError):
        metrics.mrr(bad)


def test_classification_scores_known_answer():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 1, 0])
    s = metrics.classification_scores(y_true, y_pred, n_labels=3, common=1)
    assert s["accuracy"] == pytest.approx(4 / 6)
    # F1: label0 tp2 fp1 fn1 -> 4/6; label1 tp2 fp1 fn0 -> 4/5; label2 0
    assert s["macro_f1"] == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert s["accuracy_common"] == pytest.approx(2 / 3)   # label 0 is the most common
    assert s["accuracy_rare"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        metrics.classification_scores(np.array([]), np.array([]), 3)


def test_mean_pairwise_cosine_known_answers():
    assert metrics.mean_pairwise_cosine(np.eye(4)) == pytest.approx(0.0)                   # orthogonal
    assert metrics.mean_pairwise_cosine(np.array([[1.0, 2.0]] * 3) * [[1], [2], [5]]) == pytest.approx(1.0)
    assert metrics.mean_pairwise_cosine(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(-1.0)
    v = np.random.default_rng(0).normal(size=(7, 5))                                       # the closed form
    u = v / np.linalg.norm(v, axis=1, keepdims=True)
    brute = np.mean([u[i] @ u[j] for i in range(7) for j in range(7) if i != j])
    assert metrics.mean_pairwise_cosine(v) == pytest.approx(brute)
    with pytest.raises(ValueError, match="zero vector"):
        metrics.mean_pairwise_cosine(np.array([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least two"):
        metrics.mean_pairwise_cosine(np.ones((1, 3)))


def test_effective_rank_known_answers():
    # points spread equally along k orthogonal directions (+e_i and -e_i): effective rank k
    for k in (1, 3, 6):
        pts = np.vstack([np.eye(8)[:k], -np.eye(8)[:k]]) + 5.0  # a shared offset is removed first
        assert metrics.effective_rank(pts) == pytest.approx(k)
    # variance 4:1 on two axes: exp of the entropy of (0.8, 0.2)
    pts = np.array([[2.0, 0], [-2.0, 0], [0, 1.0], [0, -1.0]])
    assert metrics.effective_rank(pts) == pytest.approx(np.exp(-(0.8 * np.log(0.8) + 0.2 * np.log(0.2))))
    with pytest.raises(ValueError, match="no direction"):
        metrics.effective_rank(np.ones((4, 3)))
    with pytest.raises(ValueError, match="at least two"):
        metrics.effective_rank(np.ones((1, 3)))
