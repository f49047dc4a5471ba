"""Benchmarks: performance targets are measured here, never asserted in tests.

    python -m analysis.bench scan [--lengths 256 1024 4096] [--repeats 3] [--threads 2]
                                  [--ref-backward-max 1024]

    python -m analysis.bench directprobe [--n 3000] [--dim 256] [--labels 3] [--separable | --overlap]
                                         [--sep S] [--seed 0]

    python -m analysis.bench threads [--models codessm rocoder bimamba] [--pairs 16] [--length 128]
                                     [--repeats 5] [--threads 2]

    python -m analysis.bench paper-shapes [--profile paper] [--models ...] [--batch 1]
                                          [--precision no|bf16|fp16] [--threads 2] [--device cpu]

    python -m analysis.bench gpu [--profile paper] [--models ...] [--batch 2] [--chapter 02] [--no-chapter]

    python -m analysis.bench pretrain [--profile default] [--models codessm rocoder bimamba]
                                      [--steps 8] [--threads 1]

Subcommands live in ``COMMANDS`` (name -> function taking the parsed arguments), so other
benchmarks can be added beside ``scan``.

``paper-shapes`` builds each model at a profile's real widths and context and, on ``batch`` and
``batch`` + 1 random full-length sequences, runs one pretraining step (forward, backward, AdamW;
autocast at the profile's ``mixed_precision``), a second forward and one inference forward. It
prints the parameters P; the activation memory A(b) = fixed + b * per sequence, measured exactly
as the bytes autograd saves for the backward (distinct storages, parameters excluded) at the two
batch sizes; the peak memory growth (resident set on CPU, allocator on CUDA); the seconds per
sequence and scaled to the profile's batch; and the training memory on a GPU at the profile's
batch B, 16 P + A(B) (float32 weights, gradients and AdamW moments, plus activations; no CUDA
context), the smallest common GPU that holds it and the largest batch per 80 GiB. On CPU the
selective scan saves what the CPU path saves, not what mamba-ssm's kernel saves.

``gpu`` is the first command on a CUDA machine: mamba-ssm's scan against the CPU path (relative
error of y and every gradient, both timed) at BiMamba's width, ``paper-shapes`` on the GPU (its
measured peak beside the estimate) and one book chapter under the smoke profile. Without CUDA it
prints what is missing and exits 0.

``scan`` times the project's CPU selective scan (``selective_scan_cpu``: the compiled kernel
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

``directprobe`` times DirectProbe (numpy and SciPy only) on Gaussian classes: ``labels``
classes of n / labels points each with unit covariance and means on random directions,
pairwise ``sep`` standard deviations apart (``--separable``: 12, linearly separable in
practice; ``--overlap``: 1.5, overlapping like hidden states of real probing tasks). It prints
n, dim, labels, the clusters found, the LP calls and the seconds.

``pretrain`` measures pretraining throughput: real (non-padding) tokens per second of one
pretraining step (forward, masked-LM loss, backward, clipping, AdamW) at a profile's widths, on
real batches of its corpus (its pretraining texts truncated to ``max_length``, BERT masking at
``mask_prob``), for four ways of computing the same loss, in one process, the steps
interleaved so the shared machine's load falls on all alike:

- ``padded, head everywhere``: ``batch_size`` functions in random order, right-padded to the
  longest in the batch, the LM head projecting every position onto the vocabulary (logits
  r(B L V)), cross-entropy with ``ignore_index`` (how pretraining ran before);
- ``padded, head at masked``: the same batches, the head only at the masked positions;
- ``bucketed, head at masked``: ``batch_size`` functions of similar length (``train.Batches``
  with lengths), the head at the masked positions: how ``train.pretrain_into`` runs;
- ``packed, head at masked``: rows of exactly ``max_length`` tokens packed from the same texts
  (``pack``: no padding at all; not used for training, see ``analysis.train``).

It prints real tokens per step, seconds per step (median) and tokens per second, and each
mode's speed-up over the first.

``threads`` measures what ``analysis.workers`` relies on: whether ``threads`` 1-thread
processes side by side do more work than one process with ``threads`` threads. The work is one
contrastive fine-tuning step (``pairs`` query/code pairs of ``length`` tokens, forward,
backward, AdamW) of a randomly initialised model at the default profile's width. For each
model it reports the best of ``repeats`` step times with 1 thread, with ``threads`` threads,
and in each of ``threads`` 1-thread processes started together, and

    throughput gain = threads * t(threads-thread process) / t(1-thread process beside others),

the steps per second of the side-by-side processes over those of the one multi-threaded
process (above 1: the worker pool wins).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import math
import multiprocessing
import os
import platform
import queue
import statistics
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .config import PROFILES, profile
from .data import load_tokenizer, pretraining_texts
from .finetune.tasks import contrastive_loss, encode, mean_pool
from .models import FAMILIES, build, scan, trainable_parameters
from .probing.directprobe import directprobe
from .train import Batches, mask_tokens, padded

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


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _release_free_memory() -> None:
    """glibc keeps freed heap pages resident; hand them back so RSS counts live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_peak() -> bool:
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _run_once(fn, inputs: dict, weight: torch.Tensor, backward: bool):
    """(seconds, peak MB, y, gradients) of one call; the loss for the backward is sum(y * weight)."""
    leaves = {k: v.clone().requires_grad_(backward) for k, v in inputs.items()}
    measured = _reset_peak()
    before = _status_mb("VmRSS")
    t = time.perf_counter()
    with torch.set_grad_enabled(backward):
        y = fn(**leaves, delta_softplus=True)
        if backward:
            (y * weight).sum().backward()
    seconds = time.perf_counter() - t
    peak = _status_mb("VmHWM") - before if measured else float("nan")
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
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(repeats))
    return 2 * src.numel() * 4 / best


def exp_rate(numel: int = 1 << 20, repeats: int = 10) -> tuple[float, float]:
    """Exponentials/s of ``torch.exp``: (into a warm in-cache buffer, into a fresh tensor)."""
    x = -torch.rand(numel)
    out = torch.empty_like(x)
    torch.exp(x, out=out)
    warm = min(_timed(lambda: torch.exp(x, out=out)) for _ in range(repeats))
    big = -torch.rand(numel * 8)
    fresh = min(_timed(lambda: torch.exp(big)) for _ in range(3))
    return numel / warm, big.numel() / fresh


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


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
            "threads": threads, "torch": torch.__version__, "machine": _machine(), "ours": scan.backend("cpu"),
            "exp_per_s_warm": exp_warm, "exp_per_s_fresh": exp_fresh,
            "shape": {"batch": batch, "dim": dim, "state": state},
            "peak_memory": "growth of peak RSS over RSS before the call (malloc_trim, then VmHWM reset via /proc/self/clear_refs)",
        })
        return frame
    finally:
        torch.set_num_threads(old_threads)


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{name}, {torch.get_num_threads()} of {torch.multiprocessing.cpu_count()} CPUs used"


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


def _scan_command(args) -> int:
    try:
        frame = scan_benchmark(args.lengths, args.repeats, args.threads, ref_backward_max=args.ref_backward_max,
                               verbose=True)
    except ValueError as err:
        print(f"python -m analysis.bench scan: {err}", file=sys.stderr)
        return 2
    print_scan_table(frame)
    return 0


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


def _directprobe_command(args) -> int:
    row = directprobe_benchmark(args.n, args.dim, args.labels, args.separable, args.sep, args.seed)
    print(f"directprobe on Gaussian classes {row['sep']:g} std apart (seed {args.seed}); {_machine()}")
    print(f"{'n':>6} {'dim':>5} {'labels':>6} {'clusters':>8} {'lp_calls':>8} {'seconds':>8}")
    print(f"{row['n']:>6} {row['dim']:>5} {row['labels']:>6} {row['clusters']:>8} "
          f"{row['lp_calls']:>8} {row['seconds']:>8.1f}")
    return 0


def _contrastive_step_times(model: str, pairs: int, length: int, repeats: int, threads: int,
                            barrier=None) -> list[float]:
    """Seconds of ``repeats`` contrastive steps of a random ``model`` on ``threads`` threads
    (one warm-up step first; ``barrier``, if given, is passed after it)."""
    torch.set_num_threads(threads)
    cfg = profile("default")
    net = build(model, cfg, cfg.vocab_size).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.finetune_lr)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, cfg.vocab_size, (2, pairs, length), generator=g)
    mask = torch.ones(pairs, length, dtype=torch.long)

    def step():
        t0 = time.perf_counter()
        q, c = (mean_pool(encode(net, ids[k], mask), mask) for k in range(2))
        loss = contrastive_loss(q, c)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        return time.perf_counter() - t0

    step()
    if barrier is not None:
        barrier.wait()
    return [step() for _ in range(repeats)]


def _side_by_side_worker(model, pairs, length, repeats, barrier, results) -> None:
    times = _contrastive_step_times(model, pairs, length, repeats, 1, barrier)
    results.put((torch.get_num_threads(), times))


def threads_benchmark(models=("codessm", "rocoder", "bimamba"), pairs: int = 16, length: int = 128,
                      repeats: int = 5, threads: int = 2) -> list[dict]:
    """One row per model: best step seconds with 1 thread, with ``threads`` threads, and in
    ``threads`` 1-thread processes started together (their mean of bests); the throughput gain."""
    unknown = [m for m in models if m not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; known: {', '.join(FAMILIES)}")
    if threads < 2:
        raise ValueError(f"threads >= 2 needed (one process with that many threads against that many "
                         f"1-thread processes), got {threads}")
    if min(pairs, length, repeats) < 1:
        raise ValueError(f"pairs, length and repeats must be >= 1, got {pairs}, {length}, {repeats}")
    ctx = multiprocessing.get_context("spawn")
    old = torch.get_num_threads()
    rows = []
    try:
        for model in models:
            one = min(_contrastive_step_times(model, pairs, length, repeats, 1))
            many = min(_contrastive_step_times(model, pairs, length, repeats, threads))
            barrier, results = ctx.Barrier(threads), ctx.Queue()
            procs = [ctx.Process(target=_side_by_side_worker, args=(model, pairs, length, repeats, barrier, results))
                     for _ in range(threads)]
            for p in procs:
                p.start()
            side = []
            try:
                while len(side) < len(procs):
                    try:
                        side.append(results.get(timeout=5))
                    except queue.Empty:
                        failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                        if failed:
                            raise RuntimeError(f"a side-by-side {model} process failed (exit codes {failed}); "
                                               "its error is printed above") from None
            finally:
                for p in procs:  # a process left waiting at the barrier for a failed one
                    if p.is_alive() and len(side) < len(procs):
                        p.terminate()
                    p.join()
            beside = statistics.fmean(min(times) for _, times in side)
            rows.append({"model": model, "one_thread_s": one, f"{threads}_threads_s": many,
                         "beside_s": beside, "beside_threads": [n for n, _ in side],
                         "gain": threads * many / beside})
    finally:
        torch.set_num_threads(old)
    return rows


def _threads_command(args) -> int:
    try:
        rows = threads_benchmark(args.models, args.pairs, args.length, args.repeats, args.threads)
    except ValueError as err:
        print(f"python -m analysis.bench threads: {err}", file=sys.stderr)
        return 2
    t = args.threads
    print(f"contrastive step, {args.pairs} pairs x {args.length} tokens, default width, best of {args.repeats}; "
          f"{_machine()}; torch {torch.__version__}")
    print(f"{'model':>8} {'1 thread':>9} {f'{t} threads':>10} {f'{t} x 1 side by side':>20} {'gain':>6}")
    for r in rows:
        print(f"{r['model']:>8} {r['one_thread_s']:>8.3f}s {r[f'{t}_threads_s']:>9.3f}s "
              f"{r['beside_s']:>19.3f}s {r['gain']:>5.2f}x")
    return 0


PRETRAIN_MODES = ("padded, head everywhere", "padded, head at masked", "bucketed, head at masked",
                  "packed, head at masked")


def pack(encoded: list[list[int]], length: int) -> np.ndarray:
    """Rows r(R length) of token ids: the sequences of ``encoded`` concatenated in order and cut
    every ``length`` tokens (R = total // length; the last partial row is dropped). Each
    encoded function is ``<s> ... </s>``, so functions are separated by ``</s><s>``."""
    total = sum(len(s) for s in encoded)
    if total < length:
        raise ValueError(f"packing needs at least one row of {length} tokens, but the texts hold "
                         f"{total}: pass more texts or a smaller max_length")
    stream = np.fromiter((t for s in encoded for t in s), dtype=np.int64, count=total)
    return stream[:total // length * length].reshape(-1, length)


def _stacked(rows: list) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.as_tensor(np.stack(rows))
    return ids, torch.ones_like(ids)


def pretrain_batches(cfg, steps: int, texts=None, tokenizer=None, seed: int = 0) -> dict:
    """{layout: [(inputs, attention mask, labels), ...]}: ``steps`` masked batches per input
    layout from the same texts truncated to ``max_length``: "padded" (``batch_size`` functions
    in random order, right-padded), "bucketed" (``train.Batches`` with lengths, as pretraining
    draws them) and "packed" (``pack`` rows of ``max_length``)."""
    tokenizer = tokenizer or load_tokenizer(cfg)
    texts = texts if texts is not None else pretraining_texts(cfg)[:4 * steps * cfg.batch_size]
    encoded = tokenizer(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    if len(encoded) < steps * cfg.batch_size:
        raise ValueError(f"{len(encoded)} texts for {steps} steps of {cfg.batch_size}: pass more texts or fewer steps")
    specials = torch.tensor(sorted(set(tokenizer.all_special_ids)))
    pad = padded(tokenizer.pad_token_id)
    draws = {"padded": Batches(encoded, cfg.batch_size, seed, pad),
             "bucketed": Batches(encoded, cfg.batch_size, seed, pad, lengths=[len(e) for e in encoded]),
             "packed": Batches(list(pack(encoded, cfg.max_length)), cfg.batch_size, seed, _stacked)}
    g = torch.Generator().manual_seed(seed)
    out = {}
    for layout, batches in draws.items():
        out[layout] = []
        for _ in range(steps):
            ids, mask = next(batches)
            inputs, labels = mask_tokens(ids, torch.isin(ids, specials) | (mask == 0), tokenizer.mask_token_id,
                                         len(tokenizer), cfg.mask_prob, g)
            out[layout].append((inputs, mask, labels))
    return out


def _pretrain_loss(model, batch: tuple, mode: str) -> torch.Tensor:
    ids, mask, labels = batch
    if mode == "padded, head everywhere":  # the head at every position, as before packing
        logits = model(input_ids=ids, attention_mask=mask).logits         # [b, L, vocab]
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def pretrain_benchmark(cfg, models=("codessm", "rocoder", "bimamba"), steps: int = 8, threads: int = 1,
                       texts=None, tokenizer=None) -> list[dict]:
    """One row per model and mode (``PRETRAIN_MODES``): real tokens per step, median seconds
    per pretraining step, tokens per second and the speed-up over the first mode. Each mode
    trains its own copy of one initialisation with its own AdamW; one warm-up step each, then
    the ``steps`` timed steps round-robin over the modes."""
    unknown = [m for m in models if m not in FAMILIES]
    if unknown or steps < 1:
        raise ValueError(f"known models: {', '.join(FAMILIES)} (got {models}); steps >= 1 (got {steps})")
    batches = pretrain_batches(cfg, steps + 1, texts, tokenizer)
    tokenizer = tokenizer or load_tokenizer(cfg)
    old, rows = torch.get_num_threads(), []
    torch.set_num_threads(threads)
    try:
        for name in models:
            nets = {mode: build(name, cfg, len(tokenizer), tokenizer.pad_token_id).train() for mode in PRETRAIN_MODES}
            opts = {mode: torch.optim.AdamW(net.parameters(), lr=cfg.lr) for mode, net in nets.items()}
            seconds = {mode: [] for mode in PRETRAIN_MODES}
            tokens = {mode: [] for mode in PRETRAIN_MODES}
            for k in range(steps + 1):
                for mode in PRETRAIN_MODES:
                    batch = batches[mode.split(",")[0]][k]
                    t0 = time.perf_counter()
                    loss = _pretrain_loss(nets[mode], batch, mode)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(nets[mode].parameters(), 1.0)
                    opts[mode].step()
                    opts[mode].zero_grad(set_to_none=True)
                    if k:  # the first step of each mode warms up
                        seconds[mode].append(time.perf_counter() - t0)
                        tokens[mode].append(int(batch[1].sum()))
            base = sum(tokens[PRETRAIN_MODES[0]]) / sum(seconds[PRETRAIN_MODES[0]])
            for mode in PRETRAIN_MODES:
                rate = sum(tokens[mode]) / sum(seconds[mode])
                rows.append({"model": name, "mode": mode, "tokens_per_step": statistics.fmean(tokens[mode]),
                             "step_s": statistics.median(seconds[mode]), "tokens_per_s": rate, "speedup": rate / base})
    finally:
        torch.set_num_threads(old)
    return rows


def _pretrain_command(args) -> int:
    try:
        cfg = profile(args.profile)
        rows = pretrain_benchmark(cfg, args.models, args.steps, args.threads)
    except ValueError as err:
        print(f"python -m analysis.bench pretrain: {err}", file=sys.stderr)
        return 2
    print(f"pretraining step at profile {cfg.name!r} (width {cfg.d_model}, {cfg.n_layers} layers, batch "
          f"{cfg.batch_size} x {cfg.max_length}, vocabulary {cfg.vocab_size}), {args.steps} steps per mode, "
          f"{args.threads} thread(s); {_machine()}; load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}")
    print(f"{'model':>8} {'mode':>24} {'tokens/step':>11} {'s/step':>7} {'tokens/s':>9} {'speed-up':>8}")
    for r in rows:
        print(f"{r['model']:>8} {r['mode']:>24} {r['tokens_per_step']:>11.0f} {r['step_s']:>7.3f} "
              f"{r['tokens_per_s']:>9.0f} {r['speedup']:>7.2f}x")
    return 0


GPU_SIZES_GIB = (16, 24, 40, 48, 80)   # common GPU memory sizes, for "which GPU does the profile need"
TRAINING_BYTES_PER_PARAMETER = 16      # float32 weight + gradient + AdamW's two moments
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def masked_per_sequence(cfg, length: int) -> int:
    """Masked positions per sequence of ``mlm_batch``: round(mask_prob * length), at least 1."""
    return max(1, round(cfg.mask_prob * length))


def mlm_batch(cfg, batch: int, length: int, seed: int = 0) -> tuple:
    """(input_ids, attention_mask, labels) [batch, length]: random tokens, no padding, exactly
    ``masked_per_sequence`` masked positions in each sequence (so the LM head, which runs at the
    masked positions only, costs the same per sequence and memory stays affine in the batch),
    BERT's 80/10/10 on them (id 4 stands for <mask>)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, cfg.vocab_size, (batch, length), generator=g)
    rank = torch.rand(batch, length, generator=g).argsort(1).argsort(1)  # a random permutation per row
    chosen = rank < masked_per_sequence(cfg, length)
    inputs, labels = mask_tokens(ids, ~chosen, 4, cfg.vocab_size, 1.0, g)  # prob 1: exactly the chosen
    return inputs, torch.ones_like(ids), labels


def _autocast(device: torch.device, precision: str):
    if precision == "no":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=_AUTOCAST[precision])


def _memory_mark(device: torch.device) -> float:
    """Start a peak-memory window; returns the baseline (bytes in use now)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return _status_mb("VmRSS") * 2 ** 20 if _reset_peak() else float("nan")


def _memory_peak(device: torch.device, mark: float) -> float:
    """Peak bytes in use since ``_memory_mark`` above its baseline (CUDA allocator; else RSS)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - mark
    return _status_mb("VmHWM") * 2 ** 20 - mark


@contextlib.contextmanager
def _saved_for_backward(model):
    """Within: count the bytes autograd saves for the backward (the distinct storages of saved
    tensors, parameters excluded: the activation memory) into the yielded dict's "bytes"."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept, out = {}, {"bytes": 0}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield out
    out["bytes"] = sum(kept.values())


def _forward_loss(model, batch: tuple, precision: str):
    device = next(model.parameters()).device
    ids, mask, labels = (t.to(device) for t in batch)
    with _autocast(device, precision):
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss


def saved_activations(model, batch: tuple, precision: str = "no") -> dict:
    """One forward with autograd on: activation bytes (``_saved_for_backward``), peak memory
    growth, seconds and loss. The graph is then freed."""
    device = next(model.parameters()).device
    mark, t0 = _memory_mark(device), time.perf_counter()
    with _saved_for_backward(model) as saved:
        loss = _forward_loss(model, batch, precision)
    return {"bytes": saved["bytes"], "peak": _memory_peak(device, mark), "seconds": time.perf_counter() - t0,
            "loss": loss.item()}


def training_step(model, opt, batch: tuple, precision: str = "no") -> dict:
    """One pretraining step (forward, backward, clipping, AdamW step; fp16 with loss scaling):
    seconds, activation bytes and peak memory growth of the forward, peak growth of the whole
    step (gradients and AdamW's states are allocated in the first step), loss."""
    device = next(model.parameters()).device
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    mark, t0 = _memory_mark(device), time.perf_counter()
    with _saved_for_backward(model) as saved:
        loss = _forward_loss(model, batch, precision)
    forward_peak = _memory_peak(device, mark)
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return {"seconds": time.perf_counter() - t0, "bytes": saved["bytes"], "forward_peak": forward_peak,
            "peak": _memory_peak(device, mark), "loss": loss.item()}


def activation_bytes(row: dict, batch: int) -> float:
    """Activation memory at ``batch`` sequences, affine in the batch: fixed + batch * per sequence."""
    return row["act_fixed"] + batch * row["act_per_seq"]


def gpu_bytes(row: dict, batch: int) -> float:
    """Training memory at ``batch``: float32 weights, gradients and AdamW moments, plus activations."""
    return TRAINING_BYTES_PER_PARAMETER * row["parameters"] + activation_bytes(row, batch)


def measure_model(name: str, cfg, batch: int = 1, precision: str = "no", device="cpu") -> dict:
    """Parameters, one training step at ``batch`` sequences of ``cfg.max_length`` tokens, the
    activation memory at ``batch`` and ``batch`` + 1 sequences (fixed part and per sequence),
    and one inference forward, of a freshly built ``name`` at ``cfg``'s widths."""
    device = torch.device(device)
    model = build(name, cfg, cfg.vocab_size).to(device).train()
    small, large = (mlm_batch(cfg, b, cfg.max_length) for b in (batch, batch + 1))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = training_step(model, opt, small, precision)
    more = saved_activations(model, large, precision)
    model.eval()
    t0 = time.perf_counter()
    with torch.no_grad(), _autocast(device, precision):
        model(input_ids=small[0].to(device), attention_mask=small[1].to(device))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    forward_s = time.perf_counter() - t0
    per_seq = more["bytes"] - step["bytes"]
    return {"model": name, "parameters": trainable_parameters(model), "batch": batch,
            "act_per_seq": per_seq, "act_fixed": step["bytes"] - batch * per_seq,
            "peak_per_seq": more["peak"] - step["forward_peak"], "loss": step["loss"],
            "step_s": step["seconds"], "step_peak": step["peak"], "forward_s": forward_s}


def paper_shapes(cfg, models=("codessm", "rocoder", "bimamba"), batch: int = 1, precision: str | None = None,
                 threads: int = 2, device="cpu") -> list[dict]:
    """``measure_model`` for each model at ``cfg`` (precision: ``cfg.mixed_precision`` unless given)."""
    if batch < 1 or threads < 1:
        raise ValueError(f"batch and threads must be >= 1, got {batch} and {threads}")
    precision = cfg.mixed_precision if precision is None else precision
    if precision not in ("no", *_AUTOCAST):
        raise ValueError(f"precision must be no, bf16 or fp16, got {precision!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return [measure_model(name, cfg, batch, precision, device) for name in models]
    finally:
        torch.set_num_threads(old)


def smallest_gpu(nbytes: float) -> str:
    fits = [g for g in GPU_SIZES_GIB if nbytes <= g * 2 ** 30]
    return f"{fits[0]} GiB" if fits else f"> {GPU_SIZES_GIB[-1]} GiB"


def print_paper_shapes(rows: list[dict], cfg, precision: str, device: str) -> None:
    gib = lambda x: x / 2 ** 30
    B, L = cfg.batch_size, cfg.max_length
    print(f"profile {cfg.name}: width {cfg.d_model}, {cfg.n_layers} layers, context {L}, vocabulary "
          f"{cfg.vocab_size}, batch {B}; autocast {precision}; measured at {rows[0]['batch']} (and "
          f"{rows[0]['batch'] + 1}) sequence(s) on {device}; {_machine()}; torch {torch.__version__}")
    print("activations = bytes autograd saves for the backward (parameters excluded), affine in the batch;"
          " peak = allocator (CUDA) or resident-set (CPU) growth")
    print(f"{'model':>8} {'params':>8} {'act/seq':>8} {'act fixed':>9} {'peak/seq':>8} {'loss':>6} "
          f"{'step s/seq':>10} {'fwd s/seq':>9} {f'step s @{B}':>10} {f'act @{B}':>9} {f'GPU @{B}':>9} "
          f"{'fits':>8} {'seqs/80GiB':>10}")
    for r in rows:
        per = r["batch"]
        fit80 = math.floor((80 * 2 ** 30 - gpu_bytes(r, 0)) / r["act_per_seq"]) if r["act_per_seq"] > 0 else 0
        print(f"{r['model']:>8} {r['parameters'] / 1e6:>7.1f}M {gib(r['act_per_seq']):>7.3f}G "
              f"{gib(r['act_fixed']):>8.3f}G {gib(r['peak_per_seq']):>7.3f}G {r['loss']:>6.2f} "
              f"{r['step_s'] / per:>10.2f} {r['forward_s'] / per:>9.2f} {r['step_s'] / per * B:>10.0f} "
              f"{gib(activation_bytes(r, B)):>8.1f}G {gib(gpu_bytes(r, B)):>8.1f}G "
              f"{smallest_gpu(gpu_bytes(r, B)):>8} {fit80:>10}")
    print(f"GPU @{B} = {TRAINING_BYTES_PER_PARAMETER} B/parameter (float32 weight, gradient, AdamW moments) + "
          f"activations at batch {B}; CUDA context and allocator slack not included. seqs/80GiB: the largest "
          f"batch per 80 GiB GPU (use gradient accumulation or more GPUs above it).")


def _paper_shapes_command(args) -> int:
    try:
        cfg = profile(args.profile)
        rows = paper_shapes(cfg, args.models, args.batch, args.precision, args.threads, args.device)
    except ValueError as err:
        print(f"python -m analysis.bench paper-shapes: {err}", file=sys.stderr)
        return 2
    print_paper_shapes(rows, cfg, args.precision or cfg.mixed_precision, args.device)
    return 0


GPU_TOLERANCE = 1e-3   # scan check: max |kernel - CPU path| over max |CPU path|, output and every gradient


def gpu_missing() -> list[str]:
    """What the GPU check needs and this machine lacks ([] = nothing)."""
    missing = []
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none: a CPU-only build"
        missing.append(f"torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {built})")
    if scan._mamba_fn() is None:
        missing.append(scan._MAMBA["why"])
    return missing


def _scan_pass(fn, inputs: dict, weight: torch.Tensor, device: torch.device) -> tuple:
    """(seconds, y, gradients) of ``fn`` forward+backward of sum(y * weight) on ``device``."""
    leaves = {k: v.to(device).requires_grad_(True) for k, v in inputs.items()}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    y = fn(**leaves, delta_softplus=True)
    (y * weight.to(device)).sum().backward()
    sync()
    return time.perf_counter() - t0, y.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}


def gpu_scan_check(cfg, batch: int = 4, repeats: int = 5, device="cuda") -> dict:
    """``selective_scan`` on ``device`` (mamba-ssm's kernel on a GPU) against the CPU path at
    BiMamba's width under ``cfg`` (d = expand * d_model, state mamba_d_state, length max_length):
    worst relative error of y and of every gradient, and forward+backward seconds of each
    (``device``: median of ``repeats`` after a warm-up)."""
    d, n, L = cfg.mamba_expand * cfg.d_model, cfg.mamba_d_state, cfg.max_length
    inputs = scan_inputs(batch, d, n, L)
    weight = torch.randn(batch, d, L, generator=torch.Generator().manual_seed(1))
    device = torch.device(device)
    gpu = [_scan_pass(scan.selective_scan, inputs, weight, device) for _ in range(repeats + 1)][1:]
    cpu = _scan_pass(scan.selective_scan_cpu, inputs, weight, torch.device("cpu"))
    rel = lambda a, b: float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
    errors = {"y": rel(gpu[-1][1], cpu[1]), **{f"d{k}": rel(gpu[-1][2][k], cpu[2][k]) for k in SCAN_INPUTS}}
    return {"shape": (batch, d, n, L), "errors": errors, "gpu_s": statistics.median(g[0] for g in gpu),
            "cpu_s": cpu[0], "ok": max(errors.values()) <= GPU_TOLERANCE}


def gpu_chapter_check(chapter: str = "02", timeout: int = 1800) -> dict:
    """Run book chapter ``chapter`` under the smoke profile in a fresh process (on the GPU,
    which the training loop picks when CUDA is available); its return code and last lines."""
    cmd = [sys.executable, "-m", "analysis.book", "run", "--only", chapter, "--profile", "smoke", "--no-html"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
    return {"command": " ".join(cmd[1:]), "ok": proc.returncode == 0, "seconds": time.perf_counter() - t0,
            "tail": tail}


def _gpu_command(args) -> int:
    missing = gpu_missing()
    if not torch.cuda.is_available():
        print("python -m analysis.bench gpu: skipped, this machine cannot run the GPU check:")
        for item in missing:
            print(f"  - {item}")
        print("On a CUDA machine: see environment-gpu.yml (a CUDA torch, then mamba-ssm and causal-conv1d).")
        return 0
    cfg = profile(args.profile)
    print(f"GPU check: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}; "
          f"scan backend: {scan.backend('cuda')}")
    results = {}
    if scan._mamba_fn() is None:
        print(f"SKIP scan check: {missing[0]}")
    else:
        sc = gpu_scan_check(cfg)
        results["scan"] = sc["ok"]
        print(f"{'PASS' if sc['ok'] else 'FAIL'} scan (b, d, n, L) = {sc['shape']}: forward+backward "
              f"{sc['gpu_s'] * 1e3:.1f} ms kernel, {sc['cpu_s']:.2f} s CPU path "
              f"({sc['cpu_s'] / sc['gpu_s']:.0f}x); worst relative error {max(sc['errors'].values()):.1e} "
              f"(tolerance {GPU_TOLERANCE:g}): " + ", ".join(f"{k} {v:.1e}" for k, v in sc["errors"].items()))
    rows = paper_shapes(cfg, args.models, args.batch, None, torch.get_num_threads(), "cuda")
    results["steps"] = all(math.isfinite(r["loss"]) for r in rows)
    print_paper_shapes(rows, cfg, cfg.mixed_precision, "cuda")
    gib = lambda x: x / 2 ** 30
    for r in rows:
        print(f"  {r['model']}: measured step peak {gib(r['step_peak']):.2f} GiB at batch {r['batch']}, "
              f"estimate {gib(gpu_bytes(r, r['batch'])):.2f} GiB")
    if not args.no_chapter:
        ch = gpu_chapter_check(args.chapter)
        results["chapter"] = ch["ok"]
        print(f"{'PASS' if ch['ok'] else 'FAIL'} {ch['command']} in {ch['seconds']:.0f} s")
        print("\n".join(f"    {line}" for line in ch["tail"]))
    print("GPU check: " + ", ".join(f"{k} {'PASS' if v else 'FAIL'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1


COMMANDS = {"gpu": _gpu_command, "paper-shapes": _paper_shapes_command, "scan": _scan_command,
            "directprobe": _directprobe_command, "threads": _threads_command, "pretrain": _pretrain_command}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("scan", help="the CPU selective scan against the reference and an unbind() loop")
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--repeats", type=int, default=3, help="runs per timing (median); the reference's backward runs once")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ref-backward-max", type=int, default=1024,
                   help="longest length at which autograd through the reference is timed (minutes at 1024; 0 skips)")
    p = sub.add_parser("directprobe", help="DirectProbe on separable or overlapping Gaussian classes")
    p.add_argument("--n", type=int, default=3000, help="training points")
    p.add_argument("--dim", type=int, default=256)
    p.add_argument("--labels", type=int, default=3)
    p.add_argument("--separable", dest="separable", action="store_true", default=True,
                   help="class means 12 std apart (default)")
    p.add_argument("--overlap", dest="separable", action="store_false", help="class means 1.5 std apart")
    p.add_argument("--sep", type=float, default=None, help="distance of the class means in std (overrides)")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("threads", help="one multi-threaded process against 1-thread processes side by side")
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--pairs", type=int, default=16, help="query/code pairs per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=5, help="steps timed (best counts), after one warm-up")
    p.add_argument("--threads", type=int, default=2, help="threads of the one process = processes side by side")
    p = sub.add_parser("paper-shapes", help="parameters, activation and GPU memory, one step per model, at a profile's shapes")
    p.add_argument("--profile", default="paper", choices=list(PROFILES))
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--batch", type=int, default=1, help="sequences measured (and one more, for the per-sequence slope)")
    p.add_argument("--precision", choices=["no", "bf16", "fp16"], default=None,
                   help="autocast precision (default: the profile's mixed_precision)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p = sub.add_parser("gpu", help="on a CUDA machine: mamba-ssm's scan, one step per model, a smoke chapter")
    p.add_argument("--profile", default="paper", choices=list(PROFILES), help="shapes of the scan check and the steps")
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--batch", type=int, default=2, help="sequences per training step")
    p.add_argument("--chapter", default="02", help="book chapter run under the smoke profile")
    p.add_argument("--no-chapter", action="store_true", help="skip the chapter run")
    p = sub.add_parser("pretrain", help="pretraining tokens per second: padded and full head against packed and masked head")
    p.add_argument("--profile", default="default", choices=list(PROFILES))
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--steps", type=int, default=8, help="timed steps per mode (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
