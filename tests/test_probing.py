"""DirectProbe on layouts with known answers, the LP and the hull distances against hand-worked
cases and brute force, and probing layers in worker processes (identical rows to the sequential
loop)."""
import itertools

import numpy as np
import pytest

from analysis.probing import control_labels, directprobe, linear_probe, separable
from analysis.probing.directprobe import hull_distance


def _blobs(centers, n=30, scale=0.3, seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(c, scale, size=(n, len(c))) for c in centers])
    return X


def test_two_separable_labels_give_two_clusters_and_perfect_accuracy():
    X = _blobs([(0, 0), (4, 0)])
    y = np.repeat([0, 1], 30)
    res = directprobe(X, y)
    assert res.n_clusters == 2
    Xt = _blobs([(0, 0), (4, 0)], n=10, seed=1)
    assert res.accuracy(Xt, np.repeat([0, 1], 10)) == 1.0
    assert res.min_distances()[(0, 1)] > 1.5


def test_xor_on_a_line_needs_four_clusters():
    # parity on a line: labels 0,1,0,1 at x = 0, 1, 2, 3 (blobs): no two same-label blobs can
    # merge, since each merged hull contains a blob of the other label
    rng = np.random.default_rng(0)
    X = np.vstack([np.c_[rng.normal(x, 0.1, 20), 2 * rng.normal(x, 0.1, 20)] for x in (0, 1, 2, 3)])
    y = np.repeat([0, 1, 0, 1], 20)
    res = directprobe(X, y)
    assert res.n_clusters == 4
    assert sorted(res.cluster_labels.tolist()) == [0, 0, 1, 1]


def test_xor_of_compact_blobs_needs_three_clusters():
    # 2-D XOR: the first label to merge its two blobs (a band along one diagonal) stays
    # separable from each blob of the other label, whose own merge is then blocked
    X = _blobs([(0, 0), (5, 5), (0, 5), (5, 0)], n=20)
    y = np.repeat([0, 0, 1, 1], 20)
    res = directprobe(X, y)
    assert res.n_clusters == 3


def test_points_inside_another_hull_force_extra_clusters():
    ring = np.array([[np.cos(t), np.sin(t)] for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)]) * 5
    center = np.array([[0.0, 0.0], [0.2, 0.1]])
    X = np.vstack([ring, center])
    y = np.array([0] * 24 + [1] * 2)
    res = directprobe(X, y)
    assert res.n_clusters > 2                       # the ring cannot be one cluster
    for idx, label in zip(res.clusters, res.cluster_labels):  # every cluster is pure
        assert (y[idx] == label).all()
    # every pair of clusters of different labels is separable, and their hulls are at least as
    # far apart as the LP's plane shows: margin 2 t* / |w| on both sides
    import importlib
    dp = importlib.import_module("analysis.probing.directprobe")
    dists = {(i, j): d for i, j, d in res.cluster_distances()}
    for (i, a), (j, b) in itertools.combinations(enumerate(res.clusters), 2):
        if res.cluster_labels[i] != res.cluster_labels[j]:
            assert separable(X[a], X[b])[0]
            t, plane, _ = dp._max_margin(X[a], X[b])
            assert dists[(i, j)] >= 2 * t / np.linalg.norm(plane[:-1]) - 1e-9 > 0
    assert res.min_distances()[(0, 1)] == min(dists.values())


def test_conflicting_duplicates_are_reported_not_looped_on():
    X = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [3.0, 1.0], [-3.0, 0.0]])
    y = np.array([0, 1, 1, 1, 0])
    with pytest.warns(UserWarning, match="share coordinates"):
        res = directprobe(X, y)
    assert res.conflicts.tolist() == [0, 1]
    assert res.n_clusters == 2


def test_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="at least two labels"):
        directprobe(np.zeros((4, 2)) + np.arange(4)[:, None], np.zeros(4))


def test_deterministic():
    X = _blobs([(0, 0), (3, 3), (0, 3)], n=25, scale=1.2)
    y = np.repeat([0, 1, 0], 25)
    a, b = directprobe(X, y), directprobe(X, y)
    assert [c.tolist() for c in a.clusters] == [c.tolist() for c in b.clusters]


def _brute_force_separable(P, Q, directions=3600):
    """2-D: separable iff some direction projects P strictly above Q."""
    for t in np.linspace(0, 2 * np.pi, directions, endpoint=False):
        w = np.array([np.cos(t), np.sin(t)])
        if (P @ w).min() > (Q @ w).max() + 1e-9:
            return True
    return False


def test_lp_agrees_with_brute_force_in_two_dimensions():
    rng = np.random.default_rng(3)
    agree = 0
    for trial in range(60):
        P = rng.normal(0, 1, size=(rng.integers(1, 6), 2))
        Q = rng.normal(rng.uniform(0, 3), 1, size=(rng.integers(1, 6), 2))
        lp = separable(P, Q)[0]
        assert lp == _brute_force_separable(P, Q), (trial, P, Q)
        agree += 1
    assert agree == 60


def test_linear_probe_beats_its_control():
    rng = np.random.default_rng(0)
    types = [f"t{k}" for k in rng.integers(0, 40, size=600)]
    X = rng.normal(size=(600, 8))
    y = (X[:, 0] > 0).astype(int)                    # depends on the features, not the type
    control = control_labels(types, y, seed=1)
    task = linear_probe(X[:400], y[:400], X[400:], y[400:])
    ctrl = linear_probe(X[:400], control[:400], X[400:], control[400:])
    assert task["accuracy"] > 0.9 and task["accuracy"] - ctrl["accuracy"] > 0.3
    assert len(set(zip(types, control))) == len(set(types))  # one label per type


def test_a_failing_lp_solver_falls_back_then_fails_clearly(monkeypatch):
    import importlib
    from types import SimpleNamespace
    dp = importlib.import_module("analysis.probing.directprobe")  # the module, not the function
    real = dp.linprog
    calls = []

    def flaky(*args, method, **kw):
        calls.append(method)
        if method == "highs-ds":  # the capped simplex gives up, as on degenerate hidden states
            return SimpleNamespace(status=1, message="Iteration limit reached")
        return real(*args, method=method, **kw)

    monkeypatch.setattr(dp, "linprog", flaky)
    P, Q = np.array([[0.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0], [2.0, 1.0]])
    assert dp.separable(P, Q)[0] and not dp.separable(P, np.vstack([Q, [[0.0, 0.5]]]))[0]
    assert calls[:2] == ["highs-ds", "highs-ipm"]
    monkeypatch.setattr(dp, "linprog", lambda *a, method, **k: SimpleNamespace(status=4, message="broken"))
    with pytest.raises(RuntimeError, match="separability LP failed.*highs-ds: broken; highs-ipm: broken; highs: broken"):
        dp.separable(P, Q)


def test_an_lp_highs_cannot_solve_is_solved_on_centred_scaled_points():
    """Hidden states of a fine-tuned CodeSSM (54 vs 77 pairs, dimension 128) on which every
    HiGHS method stops with an unknown status (t* is within rounding of 0). The scaled re-solve
    decides them: not separable, and t is the margin its plane achieves on the original points."""
    import importlib
    from pathlib import Path
    dp = importlib.import_module("analysis.probing.directprobe")
    data = np.load(Path(__file__).parent / "fixtures" / "degenerate_margin_lp.npz")
    P, Q = data["P"], data["Q"]
    assert dp._margin_lp(P, Q, []) is None  # the failure this guards against
    t, plane, _ = dp._max_margin(P, Q)
    assert abs(t) < 1e-6 and t < dp.TOL and not dp.separable(P, Q)[0]
    w, b = plane[:-1], plane[-1]
    assert np.abs(w).max() <= 1 + 1e-9
    assert min((P @ w + b).min(), -(Q @ w + b).max()) == pytest.approx(t, abs=1e-12)


def test_the_scaled_re_solve_maps_back_to_the_same_optimum(monkeypatch):
    import importlib
    from types import SimpleNamespace
    dp = importlib.import_module("analysis.probing.directprobe")
    rng = np.random.default_rng(7)
    P, Q = rng.normal(3.0, 2.0, size=(12, 4)), rng.normal(5.0, 2.0, size=(9, 4))
    t_raw, plane_raw, _ = dp._max_margin(P, Q)
    real, calls = dp.linprog, []

    def raw_fails(*args, method, **kw):
        calls.append(method)
        if len(calls) <= len(dp.SOLVERS):
            return SimpleNamespace(status=4, message="broken")
        return real(*args, method=method, **kw)

    monkeypatch.setattr(dp, "linprog", raw_fails)
    t, plane, _ = dp._max_margin(P, Q)
    assert len(calls) == len(dp.SOLVERS) + 1
    assert t == pytest.approx(t_raw, rel=1e-6, abs=1e-9)
    w, b = plane[:-1], plane[-1]
    assert (P @ w + b).min() == pytest.approx(t, abs=1e-7) and (Q @ w + b).max() <= -t + 1e-7


def test_a_point_inside_a_hull_is_at_distance_zero():
    triangle = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    assert hull_distance(triangle, [[1.0, 1.0]]) == 0.0
    assert hull_distance(triangle, [[2.0, 2.0]]) == 0.0         # on an edge
    rng = np.random.default_rng(0)
    V = rng.normal(size=(40, 6))
    assert hull_distance(V, V.mean(0)[None]) == 0.0             # the centroid, in 6-d
    assert hull_distance(V, V[7:8]) == 0.0                      # a vertex


def test_distance_to_a_segment_and_a_triangle_by_hand():
    segment = np.array([[0.0, 0.0], [2.0, 0.0]])
    assert hull_distance(segment, [[1.0, 1.0]]) == pytest.approx(1.0, abs=1e-12)       # foot inside
    assert hull_distance(segment, [[3.0, 1.0]]) == pytest.approx(np.sqrt(2), abs=1e-12)  # endpoint
    triangle = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    # to the hypotenuse x + y = 4: |3 + 3 - 4| / sqrt(2)
    assert hull_distance(triangle, [[3.0, 3.0]]) == pytest.approx(np.sqrt(2), abs=1e-12)
    assert hull_distance(triangle, [[2.0, -3.0]]) == pytest.approx(3.0, abs=1e-12)      # edge y = 0
    assert hull_distance(triangle, [[-1.0, -1.0]]) == pytest.approx(np.sqrt(2), abs=1e-12)  # vertex


def test_hull_to_hull_distance_of_two_squares_in_any_rotation():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cases = [(square + [3.0, 0.5], 2.0),           # edges facing each other
             (square + [2.0, 2.0], np.sqrt(2)),     # corner to corner
             (square + [0.5, 0.5], 0.0)]            # overlapping
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(7, 7)))  # an isometry into 7-d
    for other, want in cases:
        assert hull_distance(square, other) == pytest.approx(want, abs=1e-12)
        lifted = np.c_[square, np.zeros((4, 5))] @ Q.T + 3.0, np.c_[other, np.zeros((4, 5))] @ Q.T + 3.0
        assert hull_distance(*lifted) == pytest.approx(want, abs=1e-9)


def _segment_distance(p, a, b):
    t = np.clip((p - a) @ (b - a) / max((b - a) @ (b - a), 1e-300), 0.0, 1.0)
    return float(np.linalg.norm(p - a - t * (b - a)))


def test_hull_distances_agree_with_brute_force_in_two_dimensions():
    """Outside a convex polygon the nearest point lies on a segment between two vertices, and
    two disjoint polygons are nearest at a vertex of one of them."""
    from scipy.spatial import ConvexHull
    rng = np.random.default_rng(4)
    for trial in range(40):
        V = rng.normal(size=(rng.integers(3, 9), 2))
        W = rng.normal(rng.uniform(-4, 4, size=2), 1.0, size=(rng.integers(1, 6), 2))
        eq = ConvexHull(V).equations
        for p in W:
            inside = (eq[:, :2] @ p + eq[:, 2] <= 1e-12).all()
            want = 0.0 if inside else min(_segment_distance(p, a, b) for a, b in itertools.combinations(V, 2))
            assert hull_distance(V, p[None]) == pytest.approx(want, abs=1e-9), (trial, p)
        if not separable(V, W)[0]:
            assert hull_distance(V, W) == 0.0
            continue
        want = min(min(hull_distance(V, w[None]) for w in W), min(hull_distance(W, v[None]) for v in V))
        assert hull_distance(V, W) == pytest.approx(want, abs=1e-9), trial


def test_column_generation_equals_the_qp_on_every_pair():
    import importlib
    dp = importlib.import_module("analysis.probing.directprobe")
    rng = np.random.default_rng(5)
    for trial in range(10):
        A = rng.normal(size=(40, 30))
        B = rng.normal(size=(35, 30)) + rng.normal(size=30) * rng.uniform(0.0, 0.5)
        every = (A[:, None] - B[None]).reshape(-1, 30)   # all 1,400 differences in one QP
        assert hull_distance(A, B) == pytest.approx(dp._min_norm_point(every)[0], rel=1e-9, abs=1e-12)


def test_an_nnls_that_stops_short_is_polished_or_an_error(monkeypatch):
    import importlib
    dp = importlib.import_module("analysis.probing.directprobe")
    monkeypatch.setattr(dp, "nnls", lambda E, f, maxiter: (np.eye(E.shape[1])[0] * 0.5, 0.0))
    segment = np.array([[0.0, 1.0], [10.0, 0.0]])  # the nearest vertex is not the nearest point
    # the stalled answer (the vertex (0, 1), distance 1) is polished to the foot of the
    # perpendicular on x/10 + y = 1: distance 1 / sqrt(1 + 1/100)
    assert hull_distance(segment, [[0.0, 0.0]]) == pytest.approx(1 / np.sqrt(1.01), rel=dp.GAP)
    monkeypatch.setattr(dp, "_polish", lambda E, f, lam: lam)
    with pytest.raises(RuntimeError, match="short of its optimum"):
        hull_distance(segment, [[0.0, 0.0]])
    with pytest.raises(ValueError, match=r"B must be a non-empty point array \[n, 2\]"):
        hull_distance(segment, [[0.0, 0.0, 0.0]])


def test_hull_prediction_differs_from_the_nearest_neighbour():
    """Label 0 is a long segment at y = 1, label 1 a point at y = -1.5. The origin is 1 from
    the segment but 1.5 from the point: the hull rule says 0, 1-NN (whose nearest training
    point is the label-1 point; the label-0 points are ~10 away) says 1."""
    X = np.array([[-10.0, 1.0], [10.0, 1.0], [0.0, -1.5]])
    y = np.array([0, 0, 1])
    res = directprobe(X, y)
    assert res.n_clusters == 2
    Xt, yt = np.array([[0.0, 0.0], [9.0, 1.5]]), np.array([0, 0])
    assert res.predict(Xt).tolist() == [0, 0] and res.predict_nearest(Xt).tolist() == [1, 0]
    assert res.accuracy(Xt, yt) == 1.0 and res.nn_accuracy(Xt, yt) == 0.5
    np.testing.assert_allclose(res.hull_distances(Xt), [[1.0, 1.5], [0.5, np.hypot(9.0, 3.0)]], atol=1e-12)
    ev = res.evaluate(Xt, yt)
    assert ev.item.tolist() == [0, 1] and ev.correct.tolist() == [True, True]
    assert ev.nn_correct.tolist() == [False, True] and ev.hull_distance.tolist() == pytest.approx([1.0, 0.5])
    assert res.min_distances() == {(0, 1): pytest.approx(2.5)}   # segment to point, not point to point
    assert res.cluster_distances() == [(0, 1, pytest.approx(2.5))]
    with pytest.raises(ValueError, match=r"X_test must be a non-empty point array \[n, 2\]"):
        res.predict(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2 labels for 1 test points"):
        res.evaluate(Xt[:1], yt)


def _synthetic_probe_data(n_functions=14, n_tokens=10, n_layers=3, d=5, seed=0):
    """A ProbeData-like task (concat pairs, two labels tied to the states, a few token texts)
    and per-function states [layers, tokens, d]."""
    from types import SimpleNamespace

    import pandas as pd
    rng = np.random.default_rng(seed)
    states = [rng.normal(size=(n_layers, n_tokens, d)).astype(np.float32) for _ in range(n_functions)]
    functions = [SimpleNamespace(tokens=[SimpleNamespace(text=f"t{rng.integers(0, 6)}") for _ in range(n_tokens)])
                 for _ in range(n_functions)]
    rows = []
    for f in range(n_functions):
        for _ in range(6):
            i, j = rng.choice(n_tokens, size=2, replace=False)
            label = int(states[f][-1, i, 0] + 0.5 * rng.normal() > states[f][-1, j, 0])
            rows.append({"function": f, "i": int(i), "j": int(j), "label": label,
                         "split": "test" if f >= n_functions - 4 else "train"})
    pairs = pd.DataFrame(rows)
    data = SimpleNamespace(task="synthetic", pair_mode="concat", functions=functions, pairs=pairs,
                           split=lambda name: pairs[pairs["split"] == name])
    return data, states


def test_probe_layers_in_worker_processes_equal_the_sequential_loop(monkeypatch):
    import concurrent.futures
    from types import SimpleNamespace

    import pandas as pd

    from analysis import workers as workers_module
    from analysis.probing import experiment as ex
    data, states = _synthetic_probe_data()
    cfg = SimpleNamespace(probe_max_train_points=40, seed=0)
    pools = []

    class SpyPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, *args, **kw):
            pools.append(kw["mp_context"].get_start_method())
            super().__init__(*args, **kw)

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", SpyPool)
    monkeypatch.setattr(workers_module, "_POOL", {"pool": None, "workers": 0, "atexit": True, "context": None})
    runs = {}
    try:
        for workers in ("1", "2", "2again"):
            monkeypatch.setenv("ANALYSIS_WORKERS", workers[0])
            rows, items = ex._probe_layers(data, states, [0, 1, 2], cfg, progress=False)
            df = pd.DataFrame(rows)
            runs[workers] = df[df["metric"] != "seconds"].reset_index(drop=True)
            runs[workers + " items"] = items
        assert pools == ["spawn"]  # one pool, started by the first 2-worker run and kept
        assert runs["1"]["layer"].tolist() == sorted(runs["1"]["layer"].tolist())
        assert len(runs["1"]) == 3 * 12 and runs["1"]["value"].notna().all()
        # both accuracies per layer, each from the items: overall, and per label then averaged
        dp = runs["1"][runs["1"]["probe"] == "directprobe"]
        wide = dp.pivot_table(index="layer", columns="metric", values="value")
        per_item = runs["1 items"].groupby("layer")
        np.testing.assert_allclose(wide["accuracy"], per_item["correct"].mean())
        np.testing.assert_allclose(wide["mean_label_accuracy"],
                                   per_item.apply(lambda g: g.groupby("label")["correct"].mean().mean()))
        assert runs["2"].equals(runs["1"]) and runs["2again"].equals(runs["1"])
        assert runs["2 items"].equals(runs["1 items"]) and len(runs["1 items"]) == 3 * len(data.split("test"))
        one, _ = ex._probe_layers(data, [s[:1] for s in states], [0], cfg, progress=False)
        assert [r for r in one if r["metric"] != "seconds"] == runs["1"][runs["1"]["layer"] == 0].to_dict("records")
    finally:
        if workers_module._POOL["pool"] is not None:
            workers_module._POOL["pool"].shutdown()


def test_mean_label_accuracy_weighs_each_label_present_alike():
    # three labels on a line; the test set has 8 points of label 0 (6 right, 2 sitting in label
    # 1's blob), 2 of label 1 (both right) and none of label 2, so by hand:
    # per label 6/8 and 2/2 -> mean 0.875; overall 8/10 = 0.8; label 2 is not averaged in
    X = _blobs([(0, 0), (4, 0), (8, 0)], n=20, scale=0.2)
    res = directprobe(X, np.repeat([0, 1, 2], 20))
    Xt = np.array([[0.0, 0.0]] * 6 + [[4.0, 0.0]] * 2 + [[4.0, 0.0]] * 2)
    yt = np.array([0] * 8 + [1] * 2)
    assert res.accuracy(Xt, yt) == pytest.approx(0.8)
    assert res.mean_label_accuracy(Xt, yt) == pytest.approx(0.875)
    balanced = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 0.0], [8.0, 0.0]])
    assert res.mean_label_accuracy(balanced, [0, 1, 1, 2]) == pytest.approx((1 + 0.5 + 1) / 3)
    with pytest.raises(ValueError, match="y_test has 3 labels for 10 test points"):
        res.mean_label_accuracy(Xt, [0, 1, 2])
