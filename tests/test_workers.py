"""The shared pool of worker processes (analysis.workers)."""
import itertools
import os
import signal
import time

import pytest
import torch

from analysis import train, workers


@pytest.fixture
def fresh_pool(monkeypatch):
    """A pool of this test's own, shut down at its end."""
    monkeypatch.setattr(workers, "_POOL", {"pool": None, "workers": 0, "atexit": True, "context": None,
                                           "steps": None})
    yield
    workers.shutdown()


def _square(x):
    return x * x


def _fail_on(x, bad):
    if x == bad:
        raise ValueError(f"job {x} failed")
    return x


def _threads():
    import torch
    return torch.get_num_threads(), os.environ.get("TQDM_DISABLE"), workers.in_worker()


@pytest.mark.parametrize("value", ["0", "two", "-1", ""])
def test_worker_count_must_be_a_positive_integer(monkeypatch, value):
    monkeypatch.setenv("ANALYSIS_WORKERS", value)
    with pytest.raises(ValueError, match="ANALYSIS_WORKERS must be a positive integer"):
        workers.worker_count()


def test_worker_count_default_and_override(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.delenv("ANALYSIS_WORKERS", raising=False)
    assert workers.worker_count() == 2
    monkeypatch.setenv("ANALYSIS_WORKERS", "3")
    assert workers.worker_count() == 3


def test_more_workers_than_cpus_are_capped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setenv("ANALYSIS_WORKERS", "64")
    assert workers.check_workers() == 2
    assert "ANALYSIS_WORKERS=64 is more than the 2 CPUs" in caplog.text
    caplog.clear()
    assert workers.worker_count() == 2 and caplog.text == ""  # warned once


def test_the_runner_checks_the_worker_count_before_any_chapter(monkeypatch, tmp_path):
    from analysis import book
    monkeypatch.setenv("ANALYSIS_WORKERS", "many")
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setattr(book, "execute", lambda *a, **k: pytest.fail("a chapter ran"))
    with pytest.raises(ValueError, match="ANALYSIS_WORKERS must be a positive integer"):
        book.run("smoke", only=["01"])


def test_results_come_back_in_job_order_from_one_kept_single_threaded_pool(fresh_pool):
    jobs = [(_square, (x,)) for x in range(7)]
    assert workers.run_jobs(jobs, "squares", progress=False, workers=2) == [x * x for x in range(7)]
    pool = workers._POOL["pool"]
    assert workers.run_jobs(jobs[:3], "squares", progress=False, workers=2) == [0, 1, 4]
    assert workers._POOL["pool"] is pool  # kept between calls
    assert workers.run_jobs([(_threads, ())] * 2, "threads", progress=False, workers=2) == [(1, "1", True)] * 2
    assert not workers.in_worker()


@pytest.mark.parametrize("n", [1, 2])
def test_a_failing_job_raises_its_own_error(fresh_pool, n):
    with pytest.raises(ValueError, match="job 2 failed"):
        workers.run_jobs([(_fail_on, (x, 2)) for x in range(4)], "jobs", progress=False, workers=n)
    assert workers.run_jobs([], "nothing", progress=False) == []


def _cache_env():
    return os.environ.get("ANALYSIS_CACHE")


def test_the_pool_is_replaced_when_the_cache_root_changes(fresh_pool, monkeypatch, tmp_path):
    """A kept worker must not write into the cache root of an earlier call."""
    for name in ("a", "b"):
        monkeypatch.setenv("ANALYSIS_CACHE", str(tmp_path / name))
        assert workers.run_jobs([(_cache_env, ())] * 2, "env", progress=False, workers=2) == [str(tmp_path / name)] * 2


def test_threads_benchmark_compares_one_process_with_single_threaded_ones_side_by_side():
    from analysis import bench

    (row,) = bench.threads_benchmark(("codessm",), pairs=2, length=8, repeats=1, threads=2)
    assert row["beside_threads"] == [1, 1]
    assert min(row["one_thread_s"], row["2_threads_s"], row["beside_s"]) > 0
    assert row["gain"] == pytest.approx(2 * row["2_threads_s"] / row["beside_s"])
    with pytest.raises(ValueError, match="threads >= 2"):
        bench.threads_benchmark(("codessm",), threads=1)
    with pytest.raises(ValueError, match="unknown"):
        bench.threads_benchmark(("gpt",))


_PARENT = """
import sys, time
from analysis import workers

if __name__ == "__main__":
    workers.run_jobs([(time.sleep, (0.5,))] * 2, "start", progress=False, workers=2)
    import multiprocessing
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    time.sleep(600)
"""


def _alive(pid):
    """Running (a zombie waiting for a reaper counts as gone: it runs no code)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGTERM"])
def test_workers_exit_within_seconds_when_their_parent_is_killed(tmp_path, sig):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.getcwd(), "ANALYSIS_WORKERS": "2"})
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        parent.send_signal(getattr(signal, sig))
        parent.wait(timeout=10)
        end = time.monotonic() + 5 * workers.PARENT_CHECK_S + 2
        while any(_alive(p) for p in pids) and time.monotonic() < end:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)], "workers outlived their parent"
    finally:
        parent.kill()


def _sigint_ignored():
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_workers_ignore_sigint_the_parent_handles_it(fresh_pool):
    """A kernel's interrupt signals its whole process group: the workers must not die of it."""
    assert workers.run_jobs([(_sigint_ignored, ())] * 2, "sigint", progress=False, workers=2) == [True, True]
    assert not _sigint_ignored()  # the calling process still stops on Ctrl-C


def _count_steps(n):
    post = workers.job_progress("counting")
    for step in range(1, n + 1):
        time.sleep(0.2)
        post(step, n)
    return n


class _Bar:
    made = []

    def __init__(self, total=None, desc=None, disable=False, **kw):
        self.total, self.desc, self.n, self.updates = total, desc, 0, 0
        _Bar.made.append(self)

    def update(self, k=1):
        self.n += k
        self.updates += 1

    def close(self):
        pass


def test_a_job_in_a_worker_reports_its_steps_to_a_bar_in_the_parent(fresh_pool, monkeypatch):
    monkeypatch.setattr(workers, "tqdm", _Bar)
    _Bar.made = []
    assert workers.job_progress("here") is None  # the calling process: its loops show their own bars
    assert workers.run_jobs([(_count_steps, (8,)), (_count_steps, (5,))], "jobs", workers=2) == [8, 5]
    jobs_bar, *step_bars = _Bar.made
    assert (jobs_bar.desc, jobs_bar.total, jobs_bar.n) == ("jobs", 2, 2)
    assert sorted((b.desc, b.total, b.n) for b in step_bars) == [("counting", 5, 5), ("counting", 8, 8)]
    assert all(b.updates >= 2 for b in step_bars)  # it moved while the job ran, not only at its end


def test_fit_calls_progress_after_every_step():
    torch.set_num_threads(1)
    calls = []
    train.fit(torch.nn.Linear(2, 1), itertools.repeat(torch.ones(3, 2)), lambda m, b: m(b).sum() ** 2, 4, 0.1,
              0.0, 1, progress=lambda step, steps: calls.append((step, steps)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


_INTERRUPTED = """
import multiprocessing, os, signal, threading, time
from analysis import workers

def interrupt():
    while len(multiprocessing.active_children()) < 2:
        time.sleep(0.05)
    time.sleep(1.0)
    print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
    os.kill(os.getpid(), signal.SIGINT)

if __name__ == "__main__":
    threading.Thread(target=interrupt, daemon=True).start()
    try:
        workers.run_jobs([(time.sleep, (120,))] * 2, "long jobs", progress=False, workers=2)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_an_interrupt_ends_the_running_jobs_at_once(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "interrupted.py"
    script.write_text(_INTERRUPTED)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        out, err = parent.communicate(timeout=60)  # the jobs would take 120 s
    finally:
        parent.kill()
    pids = [int(p) for p in out.split()[:2]]
    assert len(pids) == 2 and "interrupted" in out, (out, err)
    assert parent.returncode == 0 and "Traceback" not in err, err
    assert not [p for p in pids if _alive(p)], "workers outlived the interrupt"
