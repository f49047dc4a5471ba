"""Benchmarks: performance targets are measured here, never asserted in tests.

    python -m analysis.bench scan [--lengths 256 1024 4096] [--repeats 3] [--threads 2]
                                  [--ref-backward-max 1024]

    python -m analysis.bench directprobe [--n 3000] [--dim 256] [--labels 3] [--separable | --overlap]
                                         [--sep S] [--seed 0]

    python -m analysis.bench threads [--models codessm rocoder bimamba] [--pairs 16] [--length 128]
                                     [--repeats 5] [--threads 2]

Subcommands live in ``COMMANDS`` (name -> function taking the parsed arguments), so other
benchmarks can be added beside ``scan``.

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
import platform
import queue
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from .models import scan

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
        import ctypes

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


def scan_benchmark(lengths=(256, 1024, 4096), repeats: int = 3, threads: int = 2, batch: int = 8,
                   dim: int = 256, state: int = 16, ref_backward_max: int = 1024, verbose: bool = False):
    """One row per (length, pass) as a pandas DataFrame; machine figures in ``frame.attrs``.

    Autograd through the reference runs once, and only at lengths <= ``ref_backward_max``
    (0 skips it); the reference's forward runs min(repeats, 3) times."""
    import pandas as pd

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
                truth = res.get("ref", res["unbind"])
                nbytes = _scan_bytes(batch, dim, state, L, backward)
                bw = copy_bandwidth(nbytes)
                exp_bound = batch * dim * L * state / exp_warm
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
                rows.append(row)
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
    import pandas as pd

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
    import numpy as np

    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(labels, dim))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    y = np.arange(n) % labels
    return dirs[y] * sep / np.sqrt(2) + rng.normal(size=(n, dim)), y


def directprobe_benchmark(n: int = 3000, dim: int = 256, labels: int = 3, separable: bool = True,
                          sep: float | None = None, seed: int = 0) -> dict:
    """Time one DirectProbe run on ``gaussian_classes``; returns a table row (n, dim, labels,
    sep, clusters, lp_calls, seconds). ``sep`` defaults to 12 (separable) or 1.5 (overlapping)."""
    from .probing.directprobe import directprobe

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
    from .config import profile
    from .finetune.tasks import contrastive_loss, encode, mean_pool
    from .models import build

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
    import multiprocessing

    from .models import FAMILIES

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


COMMANDS = {"scan": _scan_command, "directprobe": _directprobe_command, "threads": _threads_command}


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
    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
