"""DirectProbe (Zhou & Srikumar, NAACL 2021), exact and free: clusters of a representation
space whose convex hulls are pairwise linearly separable across labels.

Algorithm (this implementation):

1. Points that occur with two different labels cannot be separated by any hyperplane: they
   are reported (``conflicts``) and left out. Identical points of one label are one point.
2. Every point starts as its own cluster. Same-label cluster pairs are merged in order of the
   Euclidean distance between their centroids (closest first). A merge of A and B is
   accepted only if conv(A u B) stays linearly separable from every cluster of another
   label; a rejected pair is never retried (clusters only grow, so it stays rejected).
3. Separability of point sets P and Q is decided exactly by the feasibility linear program

       exists w, b:  w.x + b >= 1 (x in P),   w.x + b <= -1 (x in Q)

   solved with SciPy's HiGHS (``linprog(method="highs")``) in its bounded margin form
   (see ``separable``). Cheap sufficient tests come
   first: a hyperplane found earlier for a sub-cluster is tried on the merged cluster, and
   one LP against all other-label points at once settles most merges.

The number of clusters equals the number of labels exactly when the labels are linearly
separable in that space. Prediction assigns a test point the label of the cluster holding
its nearest training point (the nearest-cluster rule with the point-set distance, an upper
bound of the distance to the hull). ``min_distances`` are the smallest distances between
points of clusters of two labels (the same proxy). Deterministic: ties are broken by index.
"""
from __future__ import annotations

import heapq
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog


def separable(P: np.ndarray, Q: np.ndarray, tol: float = 1e-7) -> tuple[bool, np.ndarray | None]:
    """Exact linear separability of point sets P [p, d] and Q [q, d] (up to ``tol``).

    Bounded margin LP (always feasible, so the solver never meets an unbounded or
    ill-posed problem):  max t  s.t.  w.x + b >= t (x in P),  w.x + b <= -t (x in Q),
    -1 <= w_k <= 1,  t <= 1.  The sets are separable iff the optimum t* > tol. Returns
    (separable, (w, b) stacked as one vector of length d + 1, or None)."""
    d = P.shape[1]
    # variables [w (d), b, t];  rows: -(w.x + b) + t <= 0 for P;  (w.x + b) + t <= 0 for Q
    A = np.vstack([np.hstack([-P, -np.ones((len(P), 1)), np.ones((len(P), 1))]),
                   np.hstack([Q, np.ones((len(Q), 1)), np.ones((len(Q), 1))])])
    c = np.zeros(d + 2)
    c[-1] = -1.0
    bounds = [(-1, 1)] * d + [(None, None), (None, 1)]
    res = linprog(c, A_ub=A, b_ub=np.zeros(len(A)), bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(f"the separability LP failed: {res.message}")
    if -res.fun > tol:
        return True, res.x[:-1]
    return False, None


def _separates(plane: np.ndarray, P: np.ndarray, Q: np.ndarray) -> bool:
    w, b = plane[:-1], plane[-1]
    return bool((P @ w + b > 0).all() and (Q @ w + b < 0).all())


@dataclass
class DirectProbeResult:
    clusters: list[np.ndarray]           # indices into the training points, per cluster
    cluster_labels: np.ndarray
    n_labels: int
    X: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    conflicts: np.ndarray = field(default_factory=lambda: np.array([], int))
    lp_calls: int = 0
    runtime_s: float = 0.0

    @property
    def n_clusters(self) -> int:
        return len(self.clusters)

    def predict(self, X_test: np.ndarray) -> np.ndarray:
        """Label of the cluster holding each test point's nearest training point."""
        X_test = np.asarray(X_test, dtype=np.float64)
        owner = np.empty(len(self.X), dtype=int)
        for c, idx in enumerate(self.clusters):
            owner[idx] = c
        keep = np.concatenate(self.clusters)
        pts = self.X[keep]
        out = np.empty(len(X_test), dtype=self.y.dtype)
        for s in range(0, len(X_test), 256):
            block = X_test[s:s + 256]
            d2 = (block ** 2).sum(1)[:, None] - 2 * block @ pts.T + (pts ** 2).sum(1)[None]
            out[s:s + 256] = self.cluster_labels[owner[keep[np.argmin(d2, axis=1)]]]
        return out

    def accuracy(self, X_test, y_test) -> float:
        return float(np.mean(self.predict(X_test) == np.asarray(y_test)))

    def min_distances(self) -> dict[tuple, float]:
        """Smallest point distance between clusters of each pair of labels."""
        out = {}
        labels = np.unique(self.cluster_labels)
        for i, a in enumerate(labels):
            for b in labels[i + 1:]:
                Pa = self.X[np.concatenate([c for c, l in zip(self.clusters, self.cluster_labels) if l == a])]
                Pb = self.X[np.concatenate([c for c, l in zip(self.clusters, self.cluster_labels) if l == b])]
                d2 = (Pa ** 2).sum(1)[:, None] - 2 * Pa @ Pb.T + (Pb ** 2).sum(1)[None]
                out[(a.item(), b.item())] = float(np.sqrt(max(d2.min(), 0.0)))
        return out


def directprobe(X_train, y_train) -> DirectProbeResult:
    """Cluster (X_train [n, d], y_train [n]) into label-pure clusters with pairwise linearly
    separable convex hulls across labels (see the module docstring)."""
    t0 = time.perf_counter()
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [n, d] and y [n]; got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    labels = np.unique(y)
    if len(labels) < 2:
        raise ValueError(f"DirectProbe needs at least two labels, got {labels.tolist()}")
    # 1. duplicates
    _, first, inverse = np.unique(X, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(inverse):
        groups.setdefault(int(g), []).append(i)
    conflicts = sorted(i for g in groups.values() if len(set(y[g].tolist())) > 1 for i in g)
    if conflicts:
        warnings.warn(f"{len(conflicts)} training points share coordinates with a point of another "
                      "label; they cannot be separated and are left out", stacklevel=2)
    conflict_set = set(conflicts)
    clusters: dict[int, np.ndarray] = {}
    label_of: dict[int, object] = {}
    for g in sorted(groups, key=lambda g: groups[g][0]):
        idx = groups[g]
        if idx[0] in conflict_set:
            continue
        cid = len(clusters)
        clusters[cid] = np.array(idx)
        label_of[cid] = y[idx[0]]
    if len(set(label_of.values())) < 2:
        raise ValueError("after removing conflicting duplicates fewer than two labels remain")
    centroid = {c: X[idx].mean(0) for c, idx in clusters.items()}
    unique_pts = {c: X[idx[:1]] for c, idx in clusters.items()}  # hull = the distinct points
    planes: dict[int, dict[int, np.ndarray]] = {c: {} for c in clusters}  # a -> {c: plane, a positive}
    lp_calls = 0
    rejected: set[tuple[int, int]] = set()

    def points(c):
        return unique_pts[c]

    heap = []
    by_label: dict[object, list[int]] = {}
    for c in clusters:
        by_label.setdefault(label_of[c], []).append(c)
    for members in by_label.values():
        M = np.array([centroid[c] for c in members])
        d2 = (M ** 2).sum(1)[:, None] - 2 * M @ M.T + (M ** 2).sum(1)[None]
        ii, jj = np.triu_indices(len(members), 1)
        for i, j, dist in zip(ii, jj, d2[ii, jj]):
            heap.append((float(dist), members[i], members[j]))
    heapq.heapify(heap)
    alive = set(clusters)

    def merge_planes(a, b) -> dict[int, np.ndarray] | None:
        """Separating planes of conv(a u b) from every other-label cluster, or None."""
        nonlocal lp_calls
        merged = np.vstack([points(a), points(b)])
        found, pending = {}, []
        for c in sorted(alive):
            if label_of[c] == label_of[a]:
                continue
            for src in (a, b):  # a plane found earlier for a part may separate the whole
                plane = planes[src].get(c)
                if plane is not None and _separates(plane, merged, points(c)):
                    found[c] = plane
                    break
            else:
                pending.append(c)
        if not pending:
            return found
        lp_calls += 1  # one LP against all remaining other-label points settles most merges
        ok, plane = separable(merged, np.vstack([points(c) for c in pending]))
        if ok:
            found.update({c: plane for c in pending})
            return found
        for c in pending:
            lp_calls += 1
            ok, plane = separable(merged, points(c))
            if not ok:
                return None
            found[c] = plane
        return found

    while heap:
        _, a, b = heapq.heappop(heap)
        if a not in alive or b not in alive or (a, b) in rejected:
            continue
        found = merge_planes(a, b)
        if found is None:
            rejected.add((a, b))
            continue
        new = max(clusters) + 1
        clusters[new] = np.concatenate([clusters[a], clusters[b]])
        unique_pts[new] = np.vstack([points(a), points(b)])
        label_of[new] = label_of[a]
        centroid[new] = X[clusters[new]].mean(0)
        planes[new] = found
        del planes[a], planes[b]
        alive -= {a, b}
        for c in sorted(alive):
            if label_of[c] != label_of[new]:
                planes[c].pop(a, None)
                planes[c].pop(b, None)
                continue
            # rejection is permanent: conv(a u c) only grows, so (a u b, c) is rejected too
            if (min(a, c), max(a, c)) in rejected or (min(b, c), max(b, c)) in rejected:
                rejected.add((c, new))
                continue
            dist = float(((centroid[new] - centroid[c]) ** 2).sum())
            heapq.heappush(heap, (dist, c, new))
        alive.add(new)
    final = sorted(alive, key=lambda c: clusters[c].min())
    return DirectProbeResult([np.sort(clusters[c]) for c in final], np.array([label_of[c] for c in final]),
                             len(labels), X, y, np.array(conflicts, dtype=int), lp_calls,
                             time.perf_counter() - t0)
