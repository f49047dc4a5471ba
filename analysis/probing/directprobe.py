"""DirectProbe (Zhou & Srikumar, NAACL 2021), exact and free: clusters of a representation
space whose convex hulls are pairwise linearly separable across labels.

The clustering (what the result is):

1. Points that occur with two different labels cannot be separated by any hyperplane: they
   are reported (``conflicts``) and left out. Identical points of one label are one point.
2. Every point starts as its own cluster. Same-label cluster pairs are merged greedily in
   order of the squared Euclidean distance between their centroids (closest first; ties by
   cluster id; a merged cluster gets the next id). A merge of A and B is accepted iff
   conv(A u B) stays linearly separable from every current cluster of another label.
3. Separability of point sets P and Q is the bounded margin linear program

       t*(P, Q) = max t   s.t.  w.x + b >= t (x in P),  w.x + b <= -t (x in Q),
                                 |w_k| <= 1,  t <= 1,

   i.e. t* = min(1, max_{|w|_inf <= 1} (min_P w.x - max_Q w.x) / 2), and P, Q are separable
   iff t* > tol (``separable``, SciPy's HiGHS).

The number of clusters equals the number of labels exactly when the labels are linearly
separable in that space. Prediction assigns a test point the label of the cluster holding
its nearest training point (the nearest-cluster rule with the point-set distance, an upper
bound of the distance to the hull). ``min_distances`` are the smallest distances between
points of clusters of two labels (the same proxy). Deterministic: ties are broken by index.

How it is computed fast without changing a single decision of the greedy definition
(``_directprobe(..., shortcuts=False)`` keeps the plain greedy loop, without step a):

a. Whole labels. t* only grows when P or Q shrink, so if all points of label l are
   separable from all points of label m, every merge within l is separable from every
   cluster of m (and vice versa) for the whole run: such label pairs are never checked
   again. If every label pair is separable, every merge the greedy loop would try is
   accepted and the result is one cluster per label, returned at once (|labels|^2 / 2 LPs).
b. Certificates before LPs. Any w with (min_P w.x - max_Q w.x) / (2 |w|_inf) > tol proves
   t* > tol. Tried first, batched with numpy: the planes kept from earlier decisions for A
   and for B against the other cluster, and for every other cluster at once the centroid direction w = mean(A u B) - mean(C), which settles the
   many small clusters of the early merges.
c. Rejections are permanent: if conv(A u C) meets conv(D), every later cluster containing
   A u C meets the cluster containing D (clusters only grow, t* only shrinks), so a pair
   holding a rejected pair is rejected without a test.
d. Active-set LPs. The LP is solved on a subset S of the points (those nearest the
   boundary of a guess plane). The subset optimum t_S >= t*, so t_S <= tol rejects
   exactly; otherwise the subset plane is checked on all points as in (b), and if it fails
   the most violated points join S and the LP is solved again (S only grows, so this ends;
   at worst S is everything). Rejections usually need a few dozen points, not thousands.
e. One LP of A u B against all remaining other-label points settles every cluster at once
   when it succeeds; otherwise the remaining clusters are checked one by one, nearest
   first (the likeliest to fail, and one failure rejects).
"""
from __future__ import annotations

import heapq
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linprog

TOL = 1e-7
STEP = 0.5
# (method, iteration cap as a multiple of rows + columns, or None). On degenerate hidden
# states (embedding differences, many near-duplicate points) the simplex can cycle for millions
# of iterations before HiGHS gives up with an unknown status (seen: 50 s for one 113 x 130 LP);
# a normal LP here needs a few hundred. So the dual simplex runs under a cap, the interior-point
# solver (with crossover, so the duals stay a vertex's) takes what it leaves, and HiGHS's own
# choice without a cap is the last resort.
SOLVERS = (("highs-ds", 20), ("highs-ipm", None), ("highs", None))


def _margin_lp(P: np.ndarray, Q: np.ndarray, messages: list, t_cap: float = 1.0
               ) -> tuple[float, np.ndarray, np.ndarray] | None:
    """The margin LP of ``_max_margin`` on these coordinates (with t <= ``t_cap``), by the
    solvers of SOLVERS in turn; None (and their messages appended) if every one stops without
    an optimum."""
    p, q, d = len(P), len(Q), P.shape[1]
    # variables [w (d), b, t];  rows: -(w.x + b) + t <= 0 for P;  (w.x + b) + t <= 0 for Q
    A = np.empty((p + q, d + 2))
    A[:p, :d], A[:p, d], A[:p, d + 1] = -P, -1.0, 1.0
    A[p:, :d], A[p:, d], A[p:, d + 1] = Q, 1.0, 1.0
    c = np.zeros(d + 2)
    c[-1] = -1.0
    bounds = [(-1, 1)] * d + [(None, None), (None, t_cap)]
    for method, cap in SOLVERS:
        options = {} if cap is None else {"maxiter": cap * (p + q + d + 2)}
        res = linprog(c, A_ub=A, b_ub=np.zeros(p + q), bounds=bounds, method=method, options=options)
        if res.status == 0:
            return float(-res.fun), res.x[:-1], res.ineqlin.marginals != 0
        messages.append(f"{method}: {res.message}")
    return None


def _max_margin(P: np.ndarray, Q: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """t*(P, Q), its plane (w, b) stacked as one vector of length d + 1, and the rows
    (P then Q) whose constraint has a nonzero dual value (the support of the optimum).

    The LP is always feasible and bounded, but HiGHS may still stop without an optimum
    (iteration cap; an unknown status when t* is within rounding of 0, seen on 54 vs 77
    fine-tuned hidden states in dimension 128). Then it is solved again on centred and scaled
    points x' = (x - c) / s (c the mean, s the largest |x - c|), which maps back exactly: a
    plane (w, b') with margin t' on x' is (w, s b' - w.c) with margin s t' on x (and the cap
    t <= 1 is t' <= 1 / s). As t* is then near the solvers' tolerance (1e-7, like TOL), the t
    returned is the margin that plane achieves on the original points, in float64: a lower
    bound of t*, so a separability it reports is certain. Only if that fails too is it an error."""
    messages: list = []
    found = _margin_lp(P, Q, messages)
    if found is not None:
        return found
    centre = np.concatenate([P, Q]).mean(0)
    scale = float(max(np.abs(P - centre).max(initial=0.0), np.abs(Q - centre).max(initial=0.0))) or 1.0
    found = _margin_lp((P - centre) / scale, (Q - centre) / scale, messages, t_cap=1.0 / scale)
    if found is not None:
        w = found[1][:-1]
        plane = np.append(w, scale * found[1][-1] - w @ centre)
        achieved = min((P @ w).min() + plane[-1], -((Q @ w).max() + plane[-1]))
        return float(min(achieved, 1.0)), plane, found[2]
    p, q, d = len(P), len(Q), P.shape[1]
    raise RuntimeError(f"the separability LP failed ({p} vs {q} points, dimension {d}), also on "
                       "centred and scaled points: " + "; ".join(messages))


def separable(P: np.ndarray, Q: np.ndarray, tol: float = TOL) -> tuple[bool, np.ndarray | None]:
    """Exact linear separability of point sets P [p, d] and Q [q, d] (up to ``tol``).

    Bounded margin LP (always feasible, so the solver never meets an unbounded or
    ill-posed problem):  max t  s.t.  w.x + b >= t (x in P),  w.x + b <= -t (x in Q),
    -1 <= w_k <= 1,  t <= 1.  The sets are separable iff the optimum t* > tol. Returns
    (separable, (w, b) stacked as one vector of length d + 1, or None)."""
    t, plane, _ = _max_margin(np.asarray(P, dtype=np.float64), np.asarray(Q, dtype=np.float64))
    return (True, plane) if t > tol else (False, None)


def _certifies(w: np.ndarray, min_p: float, max_q: float, tol: float = TOL) -> bool:
    """(min_P w.x - max_Q w.x) / (2 |w|_inf) > tol, a proof that t*(P, Q) > tol."""
    return bool(min_p - max_q > 2 * tol * np.abs(w).max())


class _Plane:
    """A separating direction w (positive side first) and the support of the LP that found
    it (ids of distinct points), which seeds the active set of later LPs."""
    __slots__ = ("w", "support")

    def __init__(self, w: np.ndarray, support: np.ndarray):
        self.w, self.support = w, support

    def __neg__(self) -> "_Plane":
        return _Plane(-self.w, self.support)


class _Separator:
    """Exact separability decisions on the distinct points U with the active-set LP
    (docstring, d); counts the LPs."""

    def __init__(self, U: np.ndarray, tol: float = TOL):
        self.U, self.tol = U, tol
        self.lp_calls = 0

    def plane(self, ip: np.ndarray, iq: np.ndarray, guess: np.ndarray | None = None,
              seed: np.ndarray | None = None) -> _Plane | None:
        """A plane certifying t*(U[ip], U[iq]) > tol, or None if t* <= tol. ``guess``: a
        direction that nearly separates; ``seed``: point ids to start the active set with."""
        P, Q = self.U[ip], self.U[iq]
        d = P.shape[1]
        w0 = P.mean(0) - Q.mean(0) if guess is None else guess
        sp, sq = P @ w0, Q @ w0
        step = max(16, int(STEP * d))
        in_p, in_q = np.zeros(len(P), bool), np.zeros(len(Q), bool)
        in_p[np.argsort(sp, kind="stable")[:step]] = True         # the points nearest the guess
        in_q[np.argsort(-sq, kind="stable")[:step]] = True        # boundary, from both sides
        if seed is not None and len(seed):
            in_p |= np.isin(ip, seed)
            in_q |= np.isin(iq, seed)
        while True:
            self.lp_calls += 1
            sub_p, sub_q = np.flatnonzero(in_p), np.flatnonzero(in_q)
            t, plane, dual = _max_margin(P[sub_p], Q[sub_q])
            if t <= self.tol:           # a relaxation: t* <= t_S <= tol
                return None
            w, b = plane[:-1], plane[-1]
            sp, sq = P @ w + b, Q @ w + b
            if _certifies(w, sp.min(), sq.max(), self.tol):
                return _Plane(w, np.concatenate([ip[sub_p[dual[:len(sub_p)]]], iq[sub_q[dual[len(sub_p):]]]]))
            # points whose constraint the subset optimum violates, most violated first
            vp = np.flatnonzero(~in_p & (sp < t))
            vq = np.flatnonzero(~in_q & (sq > -t))
            if len(vp) + len(vq) == 0:  # only solver round-off is left: decide on all points
                self.lp_calls += 1
                t, plane, dual = _max_margin(P, Q)
                return _Plane(plane[:-1], np.concatenate([ip, iq])[dual]) if t > self.tol else None
            viol = np.concatenate([sp[vp] - t, -t - sq[vq]])
            order = np.argsort(viol, kind="stable")[:step]
            in_p[vp[order[order < len(vp)]]] = True
            in_q[vq[order[order >= len(vp)] - len(vp)]] = True


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


def _sq_dist(M: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Squared distances of the rows of M to c: the merge order (one formula everywhere)."""
    return ((M - c) ** 2).sum(1)


def _initial_clusters(X: np.ndarray, y: np.ndarray):
    """Validated inputs -> (labels, conflicts, [original indices per distinct point], [label])."""
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be [n, d] and y [n]; got {X.shape} and {y.shape}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity")
    labels = np.unique(y)
    if len(labels) < 2:
        raise ValueError(f"DirectProbe needs at least two labels, got {labels.tolist()}")
    _, inverse = np.unique(X, axis=0, return_inverse=True)
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(inverse.ravel().tolist()):
        groups.setdefault(g, []).append(i)
    conflicts = sorted(i for g in groups.values() if len(set(y[g].tolist())) > 1 for i in g)
    if conflicts:
        warnings.warn(f"{len(conflicts)} training points share coordinates with a point of another "
                      "label; they cannot be separated and are left out", stacklevel=4)
    conflict_set = set(conflicts)
    members, member_labels = [], []
    for idx in sorted(groups.values(), key=lambda idx: idx[0]):
        if idx[0] not in conflict_set:
            members.append(np.array(idx))
            member_labels.append(y[idx[0]])
    if len(set(member_labels)) < 2:
        raise ValueError("after removing conflicting duplicates fewer than two labels remain")
    return labels, conflicts, members, member_labels


def directprobe(X_train, y_train) -> DirectProbeResult:
    """Cluster (X_train [n, d], y_train [n]) into label-pure clusters with pairwise linearly
    separable convex hulls across labels (see the module docstring)."""
    return _directprobe(X_train, y_train)


def _directprobe(X_train, y_train, *, shortcuts: bool = True) -> DirectProbeResult:
    """``directprobe``; ``shortcuts=False`` skips the whole-label step (docstring, a) and runs
    the greedy loop on every input (same clusters, only slower)."""
    t0 = time.perf_counter()
    X = np.asarray(X_train, dtype=np.float64)
    y = np.asarray(y_train)
    labels, conflicts, members, member_labels = _initial_clusters(X, y)
    U = X[[idx[0] for idx in members]]               # the distinct points; hull = their hull
    ulab = np.array(member_labels)
    present = [l for l in labels if (ulab == l).any()]
    sep = _Separator(U)

    def result(final_clusters, final_labels):
        order = np.argsort([c.min() for c in final_clusters], kind="stable")
        return DirectProbeResult([np.sort(final_clusters[i]) for i in order],
                                 np.array([final_labels[i] for i in order]), len(labels), X, y,
                                 np.array(conflicts, dtype=int), sep.lp_calls, time.perf_counter() - t0)

    # a. whole labels: a separable pair of labels never needs another check
    label_sep: set[tuple] = set()
    if shortcuts:
        for i, l in enumerate(present):
            for m in present[i + 1:]:
                if sep.plane(np.flatnonzero(ulab == l), np.flatnonzero(ulab == m)) is not None:
                    label_sep |= {(l, m), (m, l)}
        if len(label_sep) == len(present) * (len(present) - 1):
            return result([np.concatenate([idx for idx, ml in zip(members, member_labels) if ml == l])
                           for l in present], present)

    # the greedy loop; clusters by id, 0.. for the distinct points, then one id per merge
    clusters: dict[int, np.ndarray] = dict(enumerate(members))     # original indices
    ids: dict[int, np.ndarray] = {c: np.array([c]) for c in clusters}  # distinct-point ids
    label_of: dict[int, object] = dict(enumerate(member_labels))
    centroid: dict[int, np.ndarray] = {c: X[idx].mean(0) for c, idx in clusters.items()}
    alive_by_label: dict[object, set[int]] = {l: set() for l in present}
    for c, l in label_of.items():
        alive_by_label[l].add(c)
    # planes[a][c]: a plane with a on its positive side and c on its negative side
    planes: dict[int, dict[int, _Plane]] = {c: {} for c in clusters}
    rejected: set[tuple[int, int]] = set()
    next_id = len(clusters)

    heap = []
    for l in present:
        same = sorted(alive_by_label[l])
        C = np.array([centroid[c] for c in same])
        for i in range(len(same) - 1):
            d2 = _sq_dist(C[i + 1:], C[i])
            heap.extend(zip(d2.tolist(), [same[i]] * len(d2), same[i + 1:]))
    heapq.heapify(heap)

    def merge_planes(a: int, b: int) -> dict[int, _Plane] | None:
        """Planes separating conv(a u b) from every other-label cluster, or None (rejected);
        clusters certified by their centroid direction get no entry."""
        l = label_of[a]
        pend = sorted(c for m in present if m != l and (l, m) not in label_sep for c in alive_by_label[m])
        if not pend:
            return {}
        im = np.concatenate([ids[a], ids[b]])
        M = U[im]
        found, rest = {}, []
        # b. kept planes of a part against this cluster
        m_min: dict[int, float] = {}
        for c in pend:
            for src in (a, b):
                pl = planes[src].get(c)
                if pl is None:
                    continue
                if id(pl) not in m_min:
                    m_min[id(pl)] = float((M @ pl.w).min())
                if _certifies(pl.w, m_min[id(pl)], float((U[ids[c]] @ pl.w).max())):
                    found[c] = pl
                    break
            else:
                rest.append(c)
        if not rest:
            return found
        # b. the centroid direction, for all remaining clusters at once
        mu = X[np.concatenate([clusters[a], clusters[b]])].mean(0)
        W = mu - np.array([centroid[c] for c in rest])
        sizes = [len(ids[c]) for c in rest]
        Q = U[np.concatenate([ids[c] for c in rest])]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        q_max = np.maximum.reduceat(np.einsum("ij,ij->i", Q, np.repeat(W, sizes, axis=0)), starts)
        ok = (M @ W.T).min(0) - q_max > 2 * sep.tol * np.abs(W).max(1)
        rest = [c for c, o in zip(rest, ok) if not o]
        if not rest:
            return found
        # e. one LP against all remaining points, then cluster by cluster, nearest first
        if len(rest) > 1:
            plane = sep.plane(im, np.concatenate([ids[c] for c in rest]))
            if plane is not None:
                found.update({c: plane for c in rest})
                return found
        dist = _sq_dist(np.array([centroid[c] for c in rest]), mu)
        for c in [rest[i] for i in np.argsort(dist, kind="stable")]:
            kept = [pl for pl in (planes[a].get(c), planes[b].get(c)) if pl is not None]
            plane = sep.plane(im, ids[c], kept[0].w if kept else None,
                              np.concatenate([pl.support for pl in kept]) if kept else None)
            if plane is None:
                return None
            found[c] = plane
        return found

    while heap:
        _, a, b = heapq.heappop(heap)
        l = label_of[a]
        if a not in alive_by_label[l] or b not in alive_by_label[l] or (a, b) in rejected:
            continue
        found = merge_planes(a, b)
        if found is None:
            rejected.add((a, b))
            continue
        new, next_id = next_id, next_id + 1
        clusters[new] = np.concatenate([clusters[a], clusters[b]])
        ids[new] = np.concatenate([ids[a], ids[b]])
        label_of[new] = l
        centroid[new] = X[clusters[new]].mean(0)
        alive_by_label[l] -= {a, b}
        planes[new] = found
        negated: dict[int, _Plane] = {}
        for c, pl in found.items():
            planes[c][new] = negated.setdefault(id(pl), -pl)
        for c in (a, b):
            for other in planes.pop(c):
                planes[other].pop(c, None)
            del ids[c]
        # rejection is permanent (docstring, c): (a u b, c) is rejected if (a, c) or (b, c) was
        same = sorted(alive_by_label[l])
        if same:
            d2 = _sq_dist(np.array([centroid[c] for c in same]), centroid[new]).tolist()
            for c, dist in zip(same, d2):
                if (min(a, c), max(a, c)) in rejected or (min(b, c), max(b, c)) in rejected:
                    rejected.add((c, new))
                else:
                    heapq.heappush(heap, (dist, c, new))
        alive_by_label[l].add(new)
    final = [c for l in present for c in alive_by_label[l]]
    return result([clusters[c] for c in final], [label_of[c] for c in final])
