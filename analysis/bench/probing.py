"""``python -m analysis.bench directprobe``: DirectProbe on Gaussian classes.

Times DirectProbe (numpy and SciPy only) on Gaussian classes: ``labels`` classes of n / labels points each with unit covariance and means on random directions,
pairwise ``sep`` standard deviations apart (``--separable``: 12, linearly separable in
practice; ``--overlap``: 1.5, overlapping like hidden states of real probing tasks). It prints
n, dim, labels, the clusters found, the LP calls and the seconds.
"""
from __future__ import annotations

import numpy as np

from ..probing.directprobe import directprobe
from .measure import machine

HELP = "DirectProbe on separable or overlapping Gaussian classes"


def add_arguments(p) -> None:
    p.add_argument("--n", type=int, default=3000, help="training points")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--labels", type=int, default=3)
    p.add_argument("--separable", dest="separable", action="store_true", default=True,
                   help="class means 12 std apart (default)")
    p.add_argument("--overlap", dest="separable", action="store_false", help="class means 1.5 std apart")
    p.add_argument("--sep", type=float, default=None, help="distance of the class means in std (overrides)")
    p.add_argument("--seed", type=int, default=0)


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


def command(args) -> int:
    row = directprobe_benchmark(args.n, args.dim, args.labels, args.separable, args.sep, args.seed)
    print(f"directprobe on Gaussian classes {row['sep']:g} std apart (seed {args.seed}); {machine()}")
    print(f"{'n':>6} {'dim':>5} {'labels':>6} {'clusters':>8} {'lp_calls':>8} {'seconds':>8}")
    print(f"{row['n']:>6} {row['dim']:>5} {row['labels']:>6} {row['clusters']:>8} "
          f"{row['lp_calls']:>8} {row['seconds']:>8.1f}")
    return 0
