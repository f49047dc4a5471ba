"""``python -m analysis.bench threads``: one multi-threaded process against 1-thread processes.

Measures what ``analysis.workers`` relies on: whether ``threads`` 1-thread
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

import multiprocessing
import queue
import statistics
import sys
import time

import torch

from ..config import profile
from ..finetune.tasks import contrastive_loss, encode, mean_pool
from ..models import FAMILIES, build
from .measure import machine

HELP = "one multi-threaded process against 1-thread processes side by side"


def add_arguments(p) -> None:
    p.add_argument("--models", nargs="+", default=["codessm", "rocoder", "bimamba"])
    p.add_argument("--pairs", type=int, default=16, help="query/code pairs per step")
    p.add_argument("--length", type=int, default=128, help="tokens per sequence")
    p.add_argument("--repeats", type=int, default=5, help="steps timed (best counts), after one warm-up")
    p.add_argument("--threads", type=int, default=2, help="threads of the one process = processes side by side")


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


def command(args) -> int:
    try:
        rows = threads_benchmark(args.models, args.pairs, args.length, args.repeats, args.threads)
    except ValueError as err:
        print(f"python -m analysis.bench threads: {err}", file=sys.stderr)
        return 2
    t = args.threads
    print(f"contrastive step, {args.pairs} pairs x {args.length} tokens, default width, best of {args.repeats}; "
          f"{machine()}; torch {torch.__version__}")
    print(f"{'model':>8} {'1 thread':>9} {f'{t} threads':>10} {f'{t} x 1 side by side':>20} {'gain':>6}")
    for r in rows:
        print(f"{r['model']:>8} {r['one_thread_s']:>8.3f}s {r[f'{t}_threads_s']:>9.3f}s "
              f"{r['beside_s']:>19.3f}s {r['gain']:>5.2f}x")
    return 0
