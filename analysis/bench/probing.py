"""``python -m analysis.bench directprobe``: DirectProbe's fast path against its reference path.

Both paths (``directprobe(..., method="fast" | "reference")``) fit the same training points and
predict the same test points, in one process, on one thread (threadpoolctl caps numpy's BLAS);
the row holds fit and predict seconds of each, their ratios, the clusters found and whether the
clusters and every prediction are identical. The reference predicts by the argmin of the full
``hull_distances`` matrix, the fast path by ``nearest_hulls``.

The points (``probe_like``) are shaped like probe features: each label a few Gaussian blobs in
a shared low-rank subspace (the anisotropy of hidden states) plus isotropic noise, labels
overlapping, and a share ``flip`` of the labels drawn at random (ambiguous pairs), so that
labels are tangled and the greedy loop has merges to refuse. The default sizes are the paper's
probing sizes: 3,600 x 768 with 3 labels (data flow) and 5,200 x 768 with 5 labels (distance);
test points are a quarter as many (an 80/20 split). ``gaussian_classes`` and
``directprobe_benchmark`` time the fast path alone on plain Gaussian classes.
"""
from __future__ import annotations

import sys
import time

import numpy as np
from threadpoolctl import threadpool_limits

from ..probing.directprobe import directprobe
from .measure import machine

HELP = "DirectProbe, fast against reference path: fit and predict seconds, identical clusters and predictions"
PAPER_SIZES = ((3600, 768, 3), (5200, 768, 5))


def add_arguments(p) -> None:
    p.add_argument("--n", type=int, nargs="+", default=[s[0] for s in PAPER_SIZES], help="training points, per size")
    p.add_argument("--dim", type=int, nargs="+", default=[s[1] for s in PAPER_SIZES], help="dimension, per size")
    p.add_argument("--labels", type=int, nargs="+", default=[s[2] for s in PAPER_SIZES], help="labels, per size")
    p.add_argument("--flip", type=float, default=0.05, help="share of labels drawn at random")
    p.add_argument("--seed", type=int, default=0)


def probe_like(n: int, dim: int, labels: int, seed: int = 0, flip: float = 0.05, blobs: int = 3):
    """(X r(n dim), y r(n)): point i of label i % labels (before flips) lies in one of ``blobs``
    Gaussian blobs of its label: x = mean_l + (offset_lb + g) V + 0.3 e, with g, e standard
    normal, V r(r dim) a random basis of rank r = max(8, dim / 8) with scales 3 / sqrt(k) (a
    decaying spectrum), offsets of scale 1.5 in that subspace and label means of norm ~ 2.8;
    then a share ``flip`` of the labels is replaced by another label drawn at random."""
    rng = np.random.default_rng(seed)
    r = max(8, dim // 8)
    basis = rng.normal(size=(r, dim)) / np.sqrt(dim) * (3.0 / np.sqrt(np.arange(1, r + 1)))[:, None]
    means = rng.normal(size=(labels, dim)) * 4.0 / np.sqrt(2 * dim)
    offsets = rng.normal(size=(labels, blobs, r)) * 1.5
    y = np.arange(n) % labels
    b = rng.integers(0, blobs, n)
    X = means[y] + (offsets[y, b] + rng.normal(size=(n, r))) @ basis + 0.3 * rng.normal(size=(n, dim))
    flipped = rng.random(n) < flip
    return X, np.where(flipped, (y + rng.integers(1, labels, n)) % labels, y)


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def directprobe_comparison(n: int = 3600, dim: int = 768, labels: int = 3, flip: float = 0.05,
                           seed: int = 0, verbose: bool = False) -> dict:
    """One table row: both paths on ``probe_like`` training points (seed) and n / 4 test points
    (seed + 1, the same blobs), on one thread."""
    if min(n, dim) < 1 or labels < 2 or n < 2 * labels:
        raise ValueError(f"need n >= 2 labels, dim >= 1 and labels >= 2; got n={n}, dim={dim}, labels={labels}")
    X, y = probe_like(n + max(1, n // 4), dim, labels, seed, flip)
    X, y, X_test = X[:n], y[:n], X[n:]
    with threadpool_limits(1):
        fast, fit_fast = _timed(lambda: directprobe(X, y, method="fast"))
        pred_fast, predict_fast = _timed(lambda: fast.predict(X_test))
        if verbose:
            print(f"  {n} x {dim}, {labels} labels: fast fit {fit_fast:.1f} s ({fast.n_clusters} clusters), "
                  f"predict {predict_fast:.1f} s; the reference follows", file=sys.stderr, flush=True)
        ref, fit_ref = _timed(lambda: directprobe(X, y, method="reference"))
        pred_ref, predict_ref = _timed(lambda: ref.cluster_labels[np.argmin(ref.hull_distances(X_test), axis=1)])
    same = len(fast.clusters) == len(ref.clusters) and all(
        np.array_equal(a, b) for a, b in zip(fast.clusters, ref.clusters)) and np.array_equal(
        fast.cluster_labels, ref.cluster_labels)
    return {"n": n, "dim": dim, "labels": labels, "test": len(X_test), "clusters": fast.n_clusters,
            "ref_clusters": ref.n_clusters, "lp_calls": fast.lp_calls, "ref_lp_calls": ref.lp_calls,
            "fit_s": fit_fast, "ref_fit_s": fit_ref, "predict_s": predict_fast, "ref_predict_s": predict_ref,
            "total_s": fit_fast + predict_fast, "ref_total_s": fit_ref + predict_ref,
            "speedup": (fit_ref + predict_ref) / (fit_fast + predict_fast),
            "same_clusters": bool(same), "same_predictions": bool(np.array_equal(pred_fast, pred_ref))}


def print_comparison(rows: list[dict], header: bool = True) -> None:
    """The rows of ``directprobe_comparison`` as a plain-text table (after a header line)."""
    cols = ["n", "dim", "labels", "test", "clusters", "ref_clusters", "lp_calls", "ref_lp_calls", "fit_s",
            "ref_fit_s", "predict_s", "ref_predict_s", "total_s", "ref_total_s", "speedup", "same_clusters",
            "same_predictions"]
    if header:
        print(" ".join(f"{c:>{max(len(c), 6)}}" for c in cols))
    for r in rows:
        print(" ".join(f"{r[c]:>{max(len(c), 6)}.{1 if c != 'speedup' else 2}f}" if isinstance(r[c], float)
                       else f"{str(r[c]):>{max(len(c), 6)}}" for c in cols), flush=True)


def command(args) -> int:
    if not len(args.n) == len(args.dim) == len(args.labels):
        print(f"python -m analysis.bench directprobe: --n, --dim and --labels need one value per size; got "
              f"{len(args.n)}, {len(args.dim)} and {len(args.labels)}", file=sys.stderr)
        return 2
    print(f"DirectProbe, fast path against reference path, one thread, probe-like points (flip {args.flip:g}, "
          f"seed {args.seed}); {machine()}", flush=True)
    rows = []
    for n, dim, labels in zip(args.n, args.dim, args.labels):
        try:
            rows.append(directprobe_comparison(n, dim, labels, args.flip, args.seed, verbose=True))
        except ValueError as err:
            print(f"python -m analysis.bench directprobe: {err}", file=sys.stderr)
            return 2
        print_comparison(rows[-1:], header=len(rows) == 1)
    return 0 if all(r["same_clusters"] and r["same_predictions"] for r in rows) else 1


def gaussian_classes(n: int, dim: int, labels: int, sep: float, seed: int = 0):
    """(X [n, dim], y [n]): point i has label i % labels, unit-variance Gaussian noise around
    its class mean; the means lie on random unit directions scaled so that every two means
    are about ``sep`` apart (exactly for two labels)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(labels, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    y = np.arange(n) % labels
    return dirs[y] * sep / np.sqrt(2) + rng.normal(size=(n, dim)), y


def directprobe_benchmark(n: int = 3000, dim: int = 256, labels: int = 3, separable: bool = True,
                          sep: float | None = None, seed: int = 0) -> dict:
    """Time one DirectProbe run on ``gaussian_classes``; returns a table row (n, dim, labels,
    sep, clusters, lp_calls, seconds). ``sep`` defaults to 12 (separable) or 1.5 (overlapping)."""
    sep = sep if sep is not None else (12.0 if separable else 1.5)
    X, y = gaussian_classes(n, dim, labels, sep, seed)
    res = directprobe(X, y)
    return {"n": n, "dim": dim, "labels": labels, "sep": sep, "clusters": res.n_clusters,
            "lp_calls": res.lp_calls, "seconds": round(res.runtime_s, 2)}
