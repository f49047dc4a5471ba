"""DirectProbe's fast path (SVM certificates before the LPs) against its reference path (the
active-set LPs alone): the same clusters, labels and predictions on the known-answer layouts of
test_probing.py and on seeded random layouts with overlapping labels."""
import importlib

import numpy as np
import pytest

from analysis.probing import directprobe

dp = importlib.import_module("analysis.probing.directprobe")  # the module, not the function


def _blobs(centers, n=30, scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    return np.vstack([rng.normal(c, scale, size=(n, len(c))) for c in centers])


def _ring():
    ring = np.array([[np.cos(t), np.sin(t)] for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)]) * 5
    return np.vstack([ring, [[0.0, 0.0], [0.2, 0.1]]]), np.array([0] * 24 + [1] * 2)


def _xor_line():
    rng = np.random.default_rng(0)
    X = np.vstack([np.c_[rng.normal(x, 0.1, 20), 2 * rng.normal(x, 0.1, 20)] for x in (0, 1, 2, 3)])
    return X, np.repeat([0, 1, 0, 1], 20)


def _overlapping(n, dim, labels, seed, sep=1.5):
    """Gaussian classes whose means are ``sep`` apart, plus 10% of labels flipped."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(labels, dim))
    means *= sep / np.sqrt(2) / np.linalg.norm(means, axis=1, keepdims=True)
    y = np.arange(n) % labels
    X = means[y] + rng.normal(size=(n, dim))
    flip = rng.random(n) < 0.1
    return X, np.where(flip, (y + 1) % labels, y)


KNOWN = {  # (X, y, clusters the layout forces)
    "two separable blobs": (_blobs([(0, 0), (4, 0)]), np.repeat([0, 1], 30), 2),
    "parity on a line": (*_xor_line(), 4),
    "xor of compact blobs": (_blobs([(0, 0), (5, 5), (0, 5), (5, 0)], n=20), np.repeat([0, 0, 1, 1], 20), 3),
    "points inside a ring": (*_ring(), None),
    "hull against nearest neighbour": (np.array([[-10.0, 1.0], [10.0, 1.0], [0.0, -1.5]]), np.array([0, 0, 1]), 2),
    "three wide blobs": (_blobs([(0, 0), (3, 3), (0, 3)], n=25, scale=1.2), np.repeat([0, 1, 0], 25), None),
}


def _same(X, y, X_test, shortcuts=True):
    fast = dp._directprobe(X, y, shortcuts=shortcuts, method="fast")
    ref = dp._directprobe(X, y, shortcuts=shortcuts, method="reference")
    assert [c.tolist() for c in fast.clusters] == [c.tolist() for c in ref.clusters]
    assert fast.cluster_labels.tolist() == ref.cluster_labels.tolist()
    assert fast.predict(X_test).tolist() == ref.predict(X_test).tolist()
    return fast, ref


@pytest.mark.parametrize("name", list(KNOWN))
@pytest.mark.parametrize("shortcuts", [True, False])
def test_known_layouts_give_the_reference_clusters_and_predictions(name, shortcuts):
    X, y, clusters = KNOWN[name]
    X_test = X + np.random.default_rng(1).normal(0, 0.5, size=X.shape)
    fast, _ = _same(X, y, X_test, shortcuts)
    if clusters is not None:
        assert fast.n_clusters == clusters


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_overlapping_layouts_give_the_reference_clusters_with_fewer_lps(seed):
    X, y = _overlapping(240, 24, 3, seed)
    X_test, _ = _overlapping(60, 24, 3, seed + 10)
    fast, ref = _same(X, y, X_test)
    assert 3 < fast.n_clusters < 240        # the labels are tangled: a real greedy run
    assert fast.lp_calls < ref.lp_calls


def test_conflicting_duplicates_are_left_out_alike():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 1.0], [-3.0, 0.0]])
    y = np.array([0, 1, 1, 1, 0])
    with pytest.warns(UserWarning, match="share coordinates"):
        fast, ref = _same(X, y, X[2:])
    assert fast.conflicts.tolist() == ref.conflicts.tolist() == [0, 1]


def test_the_svm_direction_only_proposes():
    """On overlapping hulls the SVM's plane cannot certify, so the LP decides (not separable);
    on separable points it certifies without an LP."""
    P, Q = np.array([[0.0, 0.0], [2.0, 2.0]]), np.array([[0.0, 2.0], [2.0, 0.0]])
    sep = dp._SvmSeparator(np.concatenate([P, Q]))
    assert sep.plane(np.arange(2), np.arange(2, 4)) is None and sep.lp_calls >= 1
    sep = dp._SvmSeparator(np.concatenate([P, Q + [5.0, 0.0]]))
    plane = sep.plane(np.arange(2), np.arange(2, 4))
    assert plane is not None and sep.lp_calls == 0 and sep.svm_certified == 1


def test_an_unknown_method_is_a_clear_error():
    with pytest.raises(ValueError, match="method must be one of fast, reference"):
        directprobe(np.eye(3), np.array([0, 1, 1]), method="exact")


def test_hulls_sharing_a_point_up_to_float32_round_off_touch():
    """The same token's state from two batches differs by float32 round-off: such hulls touch
    (distance 0), and the NNLS is not scaled by the round-off (it was ill-conditioned there)."""
    from analysis.probing.directprobe import hull_distance
    rng = np.random.default_rng(3)
    A = rng.normal(size=(40, 64)) * 3
    B = np.vstack([rng.normal(size=(25, 64)) * 3 + 0.5, A[7] + 1e-7 * rng.normal(size=64)])
    assert hull_distance(A, B) == 0.0
    far = B[:-1] + 50.0            # without the shared point the hulls are far apart
    assert hull_distance(A, far) > 1.0
