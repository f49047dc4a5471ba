"""``python -m analysis.bench scan``: the CPU selective scan against its references.

Times the project's CPU selective scan (``selective_scan_cpu``: the compiled kernel
where it builds, column ``ours``) against the torch chunked scan it falls back to
(``torch_scan``), against mamba-ssm's reference structure (``selective_scan_ref``: discretise every step into [b, d, L, n] tensors,
then index time steps) and against a plain autograd loop over ``unbind()`` time slices (``unbind_loop``), in one process, at batch 8, dim 256, state 16, with D, z, delta_bias and
softplus (what BiMamba passes). For each length and pass (forward; forward+backward of
sum(y * w)) it reports

- the median wall time of ``repeats`` runs (autograd through the reference: one run, and only
  up to ``ref_backward_max``, because it takes minutes at length 1024), and the ratios;
- the max abs error of y against the reference, and of every gradient against the reference
  (against the unbind loop, itself exact autograd, where the reference's backward is skipped;
  the column ``grad_truth`` says which), absolute and relative to the largest true gradient;
- the peak memory of each call: growth of the process's peak resident set (Linux VmHWM, reset
  through /proc/self/clear_refs after glibc's malloc_trim returned freed pages) over its
  resident set before the call, so outputs and gradients count, inputs do not;
- achieved bytes/s (the bytes a scan must move: inputs read and outputs written, and for the
  backward pass inputs and dy read again and gradients written) against the bandwidth of a
  plain copy of the same number of bytes between warm buffers;
- the exponential bound: batch*dim*length*state exponentials at the rate ``torch.exp``
  reaches here on a warm, in-cache buffer (the compute floor of any scan that materialises
  exp(delta A); page faults of fresh outputs would make it 3-4x slower).
"""
from __future__ import annotations

import statistics
import sys
import time

import pandas as pd
import torch
import torch.nn.functional as F

from ..models import scan
from .measure import machine, reset_peak, status_mb, timed

HELP = "the CPU selective scan against the reference and an unbind() loop"


def add_arguments(p) -> None:
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=3, help="runs per timing (median); the reference's backward runs once")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ref-backward-max", type=int, default=1024,
                   help="longest length at which autograd through the reference is timed (minutes at 1024; 0 skips)")


SCAN_INPUTS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def scan_inputs(b: int, d: int, n: int, L: int, seed: int = 0) -> dict:
    """Random inputs in the ranges a Mamba layer produces (A from S4D-Real, small steps)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)
    return dict(u=r(b, d, L), delta=r(b, d, L) * 0.5 - 2.0, A=-torch.arange(1.0, n + 1).repeat(d, 1),
                B=r(b, n, L), C=r(b, n, L), D=torch.ones(d), z=r(b, d, L), delta_bias=r(d) * 0.5)


def unbind_loop(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The plain autograd baseline: exp(delta A) for all steps at once, then a Python loop over
    ``unbind()`` time slices (whose backward, unlike indexing, is O(length)). Of the plain
    formulations tried here it was the fastest (2.4x faster forward+backward at length 1024 than
    also materialising delta B u as a [b, d, L, n] tensor, as the reference does)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    deltaA = torch.exp(delta[..., None] * A[:, None, :])                   # [b, d, L, n]
    dtu = delta * u                                                        # [b, d, L]
    x = u.new_zeros(u.shape[0], u.shape[1], A.shape[1])                   # [b, d, n]
    ys = []
    for dA_t, dtu_t, B_t, C_t in zip(deltaA.unbind(2), dtu.unbind(2), B.unbind(2), C.unbind(2)):
        x = dA_t * x + dtu_t[..., None] * B_t[:, None, :]
        ys.append((x * C_t[:, None, :]).sum(-1))
    y = torch.stack(ys, dim=2)
    if D is not None:
        y = y + u * D[:, None]
    return y * F.silu(z) if z is not None else y


def torch_scan(**kw):
    """The torch chunked scan (``scan._SelectiveScan``), the CPU path where no kernel builds."""
    return scan.selective_scan_cpu(**kw, implementation="torch")


IMPLEMENTATIONS = {"ours": scan.selective_scan_cpu, "torch_scan": torch_scan, "unbind": unbind_loop,
                   "ref": scan.selective_scan_ref}



def _run_once(fn, inputs: dict, weight: torch.Tensor, backward: bool):
    """(seconds, peak MB, y, gradients) of one call; the loss for the backward is sum(y * weight)."""
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    measured = reset_peak()
    before = status_mb("VmRSS")
    t = time.perf_counter()
    with torch.set_grad_enabled(backward):
        y = fn(**leaves, delta_softplus=True)
        if backward:
            (y * weight).sum().backward()
    seconds = time.perf_counter() - t
    peak = status_mb("VmHWM") - before if measured else float("nan")
    grads = {k: v.grad for k, v in leaves.items()} if backward else None
    return seconds, peak, y.detach(), grads


def _measure(fn, inputs, weight, backward, repeats):
    runs = [_run_once(fn, inputs, weight, backward) for _ in range(repeats)]
    return {"s": statistics.median(r[0] for r in runs), "mb": max(r[1] for r in runs),
            "y": runs[-1][2], "grads": runs[-1][3]}


def copy_bandwidth(nbytes: int, repeats: int = 5) -> float:
    """Bytes/s of ``dst.copy_(src)`` moving ``nbytes`` (half read, half written), warm buffers."""
    src = torch.ones(max(1, nbytes // 8))
    dst = torch.zeros_like(src)
    dst.copy_(src)
    best = min(timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best


def exp_rate(numel: int = 1 << 20, repeats: int = 10) -> tuple[float, float]:
    """Exponentials/s of ``torch.exp``: (into a warm in-cache buffer, into a fresh tensor)."""
    x = -torch.rand(numel)
    out = torch.empty_like(x)
    torch.exp(x, out=out)
    warm = min(timed(lambda: torch.exp(x, out=out)) for _ in range(repeats))
    big = -torch.rand(numel * 8)
    fresh = min(timed(lambda: torch.exp(big)) for _ in range(3))
    return numel / warm, big.numel() / fresh



def _scan_bytes(b: int, d: int, n: int, L: int, backward: bool) -> int:
    """Bytes a scan must move (float32): forward reads u, delta, z, B, C and writes y; the
    backward pass also reads them and dy again and writes du, ddelta, dz, dB, dC."""
    inputs = 3 * b * d * L + 2 * b * n * L
    forward = inputs + b * d * L
    return 4 * (forward + (inputs + b * d * L + inputs) * backward)


def _scan_row(res: dict, y_ref: torch.Tensor, L: int, kind: str, threads: int, nbytes: int,
              exp_bound: float) -> dict:
    """One table row of ``scan_benchmark``: times, speed-ups, peak memory and errors of every
    implementation measured in ``res`` (``_measure`` results by name) at length L, against the
    reference's output ``y_ref`` and, for gradients, the reference or else the unbind loop."""
    backward = kind == "forward+backward"
    truth = res.get("ref", res["unbind"])
    bw = copy_bandwidth(nbytes)
    row = {"length": L, "pass": kind, "threads": threads}
    for name in IMPLEMENTATIONS:
        row[f"{name}_s"] = res[name]["s"] if name in res else float("nan")
    row["x_vs_ref"] = row["ref_s"] / row["ours_s"]
    row["x_vs_unbind"] = row["unbind_s"] / row["ours_s"]
    row["x_vs_torch_scan"] = row["torch_scan_s"] / row["ours_s"]
    for name in IMPLEMENTATIONS:
        row[f"{name}_peak_mb"] = res[name]["mb"] if name in res else float("nan")
    row["err_y"] = float((res["ours"]["y"] - y_ref).abs().max())
    row["err_y_unbind"] = float((res["unbind"]["y"] - y_ref).abs().max())
    row["err_y_torch_scan"] = float((res["torch_scan"]["y"] - y_ref).abs().max())
    if backward:
        row["grad_truth"] = "ref" if "ref" in res else "unbind"
        for k in SCAN_INPUTS:
            row[f"err_d{k}"] = float((res["ours"]["grads"][k] - truth["grads"][k]).abs().max())
            row[f"rel_err_d{k}"] = row[f"err_d{k}"] / max(float(truth["grads"][k].abs().max()), 1e-30)
    row["GB_per_s"] = nbytes / row["ours_s"] / 1e9
    row["copy_GB_per_s"] = bw / 1e9
    row["x_copy_bound"] = row["ours_s"] / (nbytes / bw)
    row["exp_bound_s"] = exp_bound
    row["x_exp_bound"] = row["ours_s"] / exp_bound
    return row


def scan_benchmark(lengths=(256, 1024, 4096), repeats: int = 3, threads: int = 2, batch: int = 8,
                   dim: int = 256, state: int = 16, ref_backward_max: int = 1024, verbose: bool = False):
    """One row per (length, pass) as a pandas DataFrame; machine figures in ``frame.attrs``.

    Autograd through the reference runs once, and only at lengths <= ``ref_backward_max``
    (0 skips it); the reference's forward runs min(repeats, 3) times."""
    if not lengths or any(int(L) < 1 for L in lengths) or repeats < 1 or threads < 1:
        raise ValueError(f"lengths, repeats and threads must be positive integers, got lengths={list(lengths)}, "
                         f"repeats={repeats}, threads={threads}")
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        exp_warm, exp_fresh = exp_rate()
        rows = []
        for L in lengths:
            inputs = scan_inputs(batch, dim, state, L)
            weight = torch.randn(batch, dim, L, generator=torch.Generator().manual_seed(1))
            for backward in (False, True):
                kind = "forward+backward" if backward else "forward"
                ref_runs = min(repeats, 3) if not backward else (1 if L <= ref_backward_max else 0)
                res = {}
                for name, fn in IMPLEMENTATIONS.items():
                    runs = ref_runs if name == "ref" else repeats
                    if runs:
                        if verbose:
                            print(f"  length {L} {kind}: {name} x{runs}", file=sys.stderr, flush=True)
                        res[name] = _measure(fn, inputs, weight, backward, runs)
                if not backward:
                    y_ref = res["ref"]["y"]                  # the reference's forward always runs
                rows.append(_scan_row(res, y_ref, L, kind, threads, _scan_bytes(batch, dim, state, L, backward),
                                      batch * dim * L * state / exp_warm))
        frame = pd.DataFrame(rows)
        frame.attrs.update({
            "threads": threads, "torch": torch.__version__, "machine": machine(), "ours": scan.backend("cpu"),
            "exp_per_s_warm": exp_warm, "exp_per_s_fresh": exp_fresh,
            "shape": {"batch": batch, "dim": dim, "state": state},
            "peak_memory": "growth of peak RSS over RSS before the call (malloc_trim, then VmHWM reset via /proc/self/clear_refs)",
        })
        return frame
    finally:
        torch.set_num_threads(old_threads)



def print_scan_table(frame) -> None:
    """The headline columns as a plain-text table, then the errors, then the machine figures."""
    a = frame.attrs
    print(f"selective scan, batch {a['shape']['batch']}, dim {a['shape']['dim']}, state {a['shape']['state']}; "
          f"{a['machine']}; torch {a['torch']}")
    print(f"ours = {a['ours']}; torch_scan = the torch chunked scan")
    print(f"torch.exp: {a['exp_per_s_warm'] / 1e9:.2f} G/s warm in cache, "
          f"{a['exp_per_s_fresh'] / 1e9:.2f} G/s into a fresh tensor; peak memory = {a['peak_memory']}")
    main = ["length", "pass", "ours_s", "torch_scan_s", "unbind_s", "ref_s", "x_vs_ref", "x_vs_torch_scan",
            "x_vs_unbind", "ours_peak_mb", "torch_scan_peak_mb",
            "unbind_peak_mb", "ref_peak_mb", "GB_per_s", "copy_GB_per_s", "x_copy_bound", "exp_bound_s", "x_exp_bound"]
    errs = ["length", "pass", "err_y", "err_y_torch_scan", "err_y_unbind"] + [c for c in frame.columns if c.startswith("err_d")] + \
        (["grad_truth"] if "grad_truth" in frame else [])
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.precision", 3):
        print(frame[main].to_string(index=False))
        print()
        print(frame[errs].to_string(index=False))


def command(args) -> int:
    try:
        frame = scan_benchmark(args.lengths, args.repeats, args.threads, ref_backward_max=args.ref_backward_max,
                               verbose=True)
    except ValueError as err:
        print(f"python -m analysis.bench scan: {err}", file=sys.stderr)
        return 2
    print_scan_table(frame)
    return 0
