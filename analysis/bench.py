"""Benchmarks (performance targets live here, not in tests).

    python -m analysis.bench scan [--lengths 256 1024 4096] [--repeats 3] [--threads 2] [--with-ref-backward]

``scan`` times the project's CPU selective scan against mamba-ssm's reference structure
(``selective_scan_ref``) and against a plain autograd loop over ``unbind()`` slices, in one
process, at batch 8, dim 256, state 16: forward and forward+backward, medians, ratios, the
max abs error of y and of every gradient against the reference, the peak memory of each
(RSS growth over the call, from ``resource``'s max-RSS on a fresh subprocess would be cleaner;
here: torch's CPU allocator is not instrumented, so the peak of process RSS sampled before and
after is reported), achieved bytes/s against a measured copy bandwidth, and the time bound
set by the exponentials (batch*dim*length*state ``exp`` at the rate measured for ``torch.exp``).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from .models import scan

ARGS = ("u", "delta", "A", "B", "C")


def _inputs(b, d, n, L, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(u=torch.randn(b, d, L, generator=g), delta=torch.randn(b, d, L, generator=g) * 0.5,
                A=-torch.rand(d, n, generator=g) - 0.1, B=torch.randn(b, n, L, generator=g),
                C=torch.randn(b, n, L, generator=g))


def unbind_loop(u, delta, A, B, C, delta_softplus=True):
    """The plain autograd baseline: a Python loop over ``unbind()`` time slices."""
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, _ = u.shape
    x = u.new_zeros(b, d, A.shape[1])
    ys = []
    dA = torch.exp(delta[..., None] * A[:, None, :])
    for dA_t, dt_t, u_t, B_t, C_t in zip(dA.unbind(2), delta.unbind(2), u.unbind(2), B.unbind(2), C.unbind(2)):
        x = dA_t * x + (dt_t * u_t)[..., None] * B_t[:, None, :]
        ys.append((x * C_t[:, None, :]).sum(-1))
    return torch.stack(ys, 2)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _time(fn, kw, backward: bool, repeats: int):
    times, peaks, y, grads = [], [], None, None
    for _ in range(repeats):
        leaves = {k: v.clone().requires_grad_(backward) for k, v in kw.items()}
        before = _rss_mb()
        t = time.perf_counter()
        if backward:
            y = fn(**leaves, delta_softplus=True)
            (y * y).sum().backward()
        else:
            with torch.no_grad():
                y = fn(**leaves, delta_softplus=True)
        times.append(time.perf_counter() - t)
        peaks.append(_rss_mb() - before)
        grads = {k: v.grad for k, v in leaves.items()} if backward else None
    return statistics.median(times), max(peaks), y.detach(), grads


def _copy_bandwidth(nbytes: int) -> float:
    a = torch.empty(nbytes // 4)
    b = torch.empty_like(a)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        b.copy_(a)
        ts.append(time.perf_counter() - t)
    return 2 * nbytes / min(ts)  # read + write


def _exp_rate() -> float:
    x = -torch.rand(8 * 256 * 16 * 256)
    ts = []
    for _ in range(5):
        t = time.perf_counter()
        torch.exp(x)
        ts.append(time.perf_counter() - t)
    return x.numel() / min(ts)


def scan_benchmark(lengths=(256, 1024, 4096), repeats: int = 3, threads: int = 2, batch: int = 8,
                   dim: int = 256, state: int = 16, ref_backward_max: int = 256) -> list[dict]:
    """Rows of measurements; autograd through the reference (minutes at 1024) only up to
    ``ref_backward_max``."""
    torch.set_num_threads(threads)
    rows = []
    exp_rate = _exp_rate()
    for L in lengths:
        kw = _inputs(batch, dim, state, L)
        nbytes = sum(v.numel() * 4 for v in kw.values()) + batch * dim * L * 4  # inputs + y
        bw = _copy_bandwidth(max(nbytes, 1 << 20))
        exp_bound = batch * dim * L * state / exp_rate
        _, _, y_ref, _ = _time(scan.selective_scan_ref, kw, False, 1)
        for kind, backward in (("forward", False), ("forward+backward", True)):
            ours = _time(scan.selective_scan_cpu, kw, backward, repeats)
            loop = _time(unbind_loop, kw, backward, repeats)
            ref = (_time(scan.selective_scan_ref, kw, backward, 1)
                   if (not backward or L <= ref_backward_max) else None)
            row = {"length": L, "pass": kind, "threads": threads, "ours_s": ours[0], "unbind_s": loop[0],
                   "ref_s": ref[0] if ref else float("nan"),
                   "vs_ref": ref[0] / ours[0] if ref else float("nan"), "vs_unbind": loop[0] / ours[0],
                   "ours_peak_mb": ours[1], "unbind_peak_mb": loop[1],
                   "ref_peak_mb": ref[1] if ref else float("nan"),
                   "max_err_y": float((ours[2] - y_ref).abs().max()),
                   "GB_per_s": nbytes / ours[0] / 1e9, "copy_GB_per_s": bw / 1e9,
                   "exp_bound_s": exp_bound, "x_exp_bound": ours[0] / exp_bound}
            if backward and ref:
                row["max_rel_err_grad"] = max(float((ours[3][k] - ref[3][k]).abs().max() / ref[3][k].abs().max())
                                              for k in ARGS)
            rows.append(row)
    return rows


def _print(rows: list[dict]) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 3):
        print(frame.to_string(index=False))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scan", help="the CPU selective scan against the reference and an unbind loop")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ref-backward-max", type=int, default=256,
                   help="longest length at which autograd through the reference is timed")
    args = parser.parse_args(argv)
    if args.command == "scan":
        print(f"machine: {torch.get_num_threads()} -> {args.threads} threads, torch {torch.__version__}")
        _print(scan_benchmark(args.lengths, args.repeats, args.threads, ref_backward_max=args.ref_backward_max))
    return 0


if __name__ == "__main__":
    sys.exit(main())
