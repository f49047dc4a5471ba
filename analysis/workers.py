"""Worker processes: the one pool of spawned single-threaded processes that probing and
fine-tuning share, so that independent jobs use every core.

These models are small, and 2 threads in one process do not use 2 cores fully: two 1-thread
processes side by side do more contrastive fine-tuning steps than one 2-thread process
(``python -m analysis.bench threads`` measures it; README). DirectProbe's LPs run on one
thread. So independent jobs (a layer's probe, a fine-tuning run) go to ``worker_count()``
processes of one thread each. ``$ANALYSIS_WORKERS`` sets the count (a positive integer, at
most the CPU count: more is capped with a warning; default ``min(2, os.cpu_count())``); 1 runs
every job in the calling process, in order. The runner calls ``check_workers()`` first, so a
bad value fails before any chapter runs.

Reproducible bits. On the CPU a sum split over threads is added up in another order with
another thread count, so float32 results differ in their low bits, and training compounds
the differences step by step: torch's reductions, MKL's matrix products and the
selective-scan kernel (``models.scan_kernel``: one span per thread) all split by the thread
count. ``single_threaded()`` therefore runs every training run (``train.fit``,
``train.pretrain_into``, ``finetune.train_task``), every score and every probe on one thread,
with torch's deterministic algorithms on, in the pool and in the calling process alike: one
cache key, one set of bits, whatever ``$ANALYSIS_WORKERS``, ``$OMP_NUM_THREADS`` or the jobs
beside it (``tests/test_determinism.py``; ``$OMP_NUM_THREADS`` read at import changes nothing
once the thread count is set). One thread is what a worker has anyway, and a
worker's way (one thread a job, jobs side by side) is this kind of model's faster one.

The pool is started on first use and kept (a worker's imports take seconds; a chapter runs
dozens of jobs). Workers are spawned, not forked: forking is unsafe once torch has started
its OpenMP threads. A worker exits when its parent dies (SIGKILL, SIGTERM, a crash): a thread
in each worker checks its parent's pid every ``PARENT_CHECK_S`` seconds. Workers ignore
SIGINT: Ctrl-C (or a Jupyter kernel's interrupt, which signals the kernel's whole process
group, also when the kernel shuts down) is the parent's to handle; an interrupted
``run_jobs`` ends the workers at once (``shutdown(kill=True)``), and at exit the idle pool is
shut down cleanly.

A job reports progress through ``job_progress(desc)``: in a worker, a callback
``progress(step, steps)`` that posts to the parent over a queue (at most every
``STEP_POST_S`` seconds); ``run_jobs`` drains it into one bar per running job's loop. A job must be a
module-level function with picklable arguments; two jobs building the same cache artifact
are safe (``cache.cached`` locks it: the second waits), but the caller builds shared
artifacts first so that the workers do not wait on each other.
"""
from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Callable, Sequence

import torch
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

log = logging.getLogger(__name__)
WORKERS_ENV = "ANALYSIS_WORKERS"
PARENT_CHECK_S = 1.0
STEP_POST_S = 0.5  # a worker posts its step count at most this often (and at the last step)
_ONE_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_POOL: dict = {"pool": None, "workers": 0, "atexit": False, "context": None, "steps": None}
_IN_WORKER = False  # set by the initializer, in the worker processes only
_JOB: dict = {"steps": None, "tag": None}  # in a worker: the queue to the parent, the running job's tag
_CALLS = itertools.count()  # tags a run_jobs call's step messages, so a late one of an earlier call is dropped
_CAPPED_WARNED: set = set()


def worker_count() -> int:
    """``$ANALYSIS_WORKERS`` if set (a positive integer; above the CPU count it is capped to
    it, with a warning), else ``min(2, os.cpu_count())``."""
    cpus = os.cpu_count() or 1
    raw = os.environ.get(WORKERS_ENV)
    if raw is None:
        return min(2, cpus)
    try:
        n = int(raw.strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{WORKERS_ENV} must be a positive integer (worker processes for probing "
                         f"and fine-tuning jobs), got {raw!r}")
    if n > cpus:
        if (n, cpus) not in _CAPPED_WARNED:
            _CAPPED_WARNED.add((n, cpus))
            log.warning("%s=%d is more than the %d CPUs of this machine; using %d worker processes",
                        WORKERS_ENV, n, cpus, cpus)
        return cpus
    return n


def check_workers() -> int:
    """Validate ``$ANALYSIS_WORKERS`` now (the runner calls this before any chapter runs);
    returns the worker count. Raises ``ValueError`` on a bad value."""
    return worker_count()


def _exit_with_parent(parent: int) -> None:
    """In a worker: end this process once ``parent`` is no longer its parent (it died; the
    orphan was re-parented), checked every ``PARENT_CHECK_S`` seconds from a daemon thread."""
    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os._exit(1)  # no clean-up to wait for: the work is lost with the parent anyway
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _one_thread_worker(parent: int | None = None, steps=None) -> None:
    """Pool initializer: ignore SIGINT (the parent's to handle), exit when ``parent`` dies, one
    BLAS/OpenMP/torch thread per worker (the workers are the parallelism), no progress bars of
    its own (its loops post their steps to the ``steps`` queue; the caller shows the bars).
    ``TQDM_DISABLE`` reaches bars only if tqdm is imported after it: a spawned worker first
    re-imports the caller's main script, which may have imported tqdm already; so loops that
    show bars also ask ``in_worker()``."""
    global _IN_WORKER
    _IN_WORKER = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if steps is not None:
        steps.cancel_join_thread()  # a step message not yet read never holds up the worker's exit
        _JOB["steps"] = steps
    if parent is not None:
        _exit_with_parent(parent)
    for name in _ONE_THREAD_ENV:  # for libraries loaded later in the worker
        os.environ[name] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    torch.set_num_threads(1)
    threadpool_limits(1)


@contextmanager
def single_threaded():
    """Within: torch, MKL/oneDNN, OpenMP and the BLAS that numpy loads compute on one thread,
    and torch uses its deterministic algorithms (on the CPU; a GPU's kernels are left as
    they are), so a result is the same bits in any process; both restored on leaving (module
    docstring). Usable as a decorator; nests. Interop threads need no fixing: an eager op
    runs on the calling thread."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cpu = not torch.cuda.is_available()
    torch.set_num_threads(1)
    if cpu:  # warn, never fail, at an op without a deterministic kernel
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(threads)
        if cpu:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def in_worker() -> bool:
    """True in a process of the pool (where progress bars are left to the caller)."""
    return _IN_WORKER


def job_progress(desc: str) -> Callable[[int, int], None] | None:
    """In a job of ``run_jobs`` running in a worker: a callback ``progress(step, steps)`` (steps
    done of ``steps``) that posts to the parent, which shows it as a bar named ``desc``; at most
    every ``STEP_POST_S`` seconds, and always the last step. ``None`` anywhere else (a loop in
    the calling process shows its own bar)."""
    steps_queue, tag = _JOB["steps"], _JOB["tag"]
    if steps_queue is None or tag is None:
        return None
    last = [-STEP_POST_S]

    def post(step: int, steps: int) -> None:
        now = time.monotonic()
        if step >= steps or now - last[0] >= STEP_POST_S:
            last[0] = now
            steps_queue.put((tag, desc, step, steps))
    return post


def _job(tag: tuple, fn: Callable, args: tuple):
    """In a worker: ``fn(*args)``, with ``tag`` (call, job index) on its step messages."""
    _JOB["tag"] = tag
    try:
        return fn(*args)
    finally:
        _JOB["tag"] = None


def _context() -> tuple:
    """What a spawned worker inherits and the jobs depend on: the working directory and the
    project's ``ANALYSIS_*`` variables (cache root, run directory, kernel switch)."""
    return os.getcwd(), tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("ANALYSIS_")))


def _pool(workers: int):
    """The kept pool of ``workers`` processes; replaced if the count or the context changes,
    or a worker died."""

    pool = _POOL["pool"]
    if pool is not None and (_POOL["workers"] != workers or _POOL["context"] != _context()
                             or getattr(pool, "_broken", False)):
        shutdown()
        pool = None
    if pool is None:
        ctx = multiprocessing.get_context("spawn")
        steps = ctx.Queue()
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_one_thread_worker,
                                   initargs=(os.getpid(), steps))
        if not _POOL["atexit"]:
            atexit.register(shutdown)
            _POOL["atexit"] = True
        _POOL.update(pool=pool, workers=workers, context=_context(), steps=steps)
    return pool


def shutdown(kill: bool = False) -> None:
    """End the kept pool, if any: idle workers are told to exit and joined; with ``kill`` the
    workers are terminated first, so jobs still running end now (an interrupt)."""
    pool, steps = _POOL["pool"], _POOL.get("steps")
    _POOL.update(pool=None, workers=0, context=None, steps=None)
    if pool is None:
        return
    if kill:  # ProcessPoolExecutor has no public way (before Python 3.14) to stop a running job
        for proc in list((pool._processes or {}).values()):
            proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
    if steps is not None:
        steps.close()
        steps.cancel_join_thread()


def _drain(steps, call: int, bars: dict, show: bool, finished: set = frozenset()) -> None:
    """Move the step messages of run ``call`` from the workers into ``bars`` (one per job's loop);
    a message of a job already ``finished`` (it can arrive after the job's result) is dropped."""
    while True:
        try:
            (tag_call, index), desc, step, total = steps.get_nowait()
        except queue.Empty:
            return
        if tag_call != call or index in finished:
            continue
        bar = bars.get((index, desc))
        if bar is None:
            bar = bars[index, desc] = tqdm(total=total, desc=desc, leave=False, disable=not show)
        bar.update(step - bar.n)


def run_jobs(jobs: Sequence[tuple[Callable, tuple]], desc: str, progress: bool = True,
             workers: int | None = None) -> list:
    """``[fn(*args) for fn, args in jobs]``, computed by ``workers`` (default
    ``worker_count()``) processes, started in list order (put the longest first). The first
    failing job raises its error and cancels the jobs not yet started. An interrupt (Ctrl-C,
    SIGTERM's ``SystemExit``) ends the workers, running jobs included, and re-raises. The
    steps that jobs post (``job_progress``) show as a bar per running loop under the jobs' bar."""
    workers = min(worker_count() if workers is None else workers, len(jobs))
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, leave=False)
    try:
        if workers <= 1:
            results = []
            for fn, args in jobs:
                results.append(fn(*args))
                bar.update(1)
            return results
        pool, call, step_bars, finished = _pool(workers), next(_CALLS), {}, set()
        steps = _POOL["steps"]
        futures = {pool.submit(_job, (call, i), fn, args): i for i, (fn, args) in enumerate(jobs)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, timeout=STEP_POST_S, return_when=FIRST_COMPLETED)
                _drain(steps, call, step_bars, progress, finished)
                for f in done:
                    f.result()
                    bar.update(1)
                    finished.add(futures[f])
                    for key in [k for k in step_bars if k[0] == futures[f]]:
                        step_bar = step_bars.pop(key)  # the job ended: all its steps ran, posted or not yet
                        step_bar.update(step_bar.total - step_bar.n)
                        step_bar.close()
        except Exception:  # a failed job: the jobs not yet started are not
            for f in futures:
                f.cancel()
            raise
        except BaseException:  # KeyboardInterrupt, SystemExit: the running jobs end too
            shutdown(kill=True)
            raise
        finally:
            for b in step_bars.values():
                b.close()
        return [f.result() for f in futures]
    finally:
        bar.close()
