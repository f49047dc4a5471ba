"""A chapter that uses the worker pool, run through the runner (analysis.book) with a real
kernel: a clean log when it ends, a prompt stop when it is interrupted, and the parameters
papermill injects hidden from the page."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import nbformat
import pytest

from analysis import book

ROOT = Path(__file__).resolve().parents[1]
HEADER = textwrap.dedent("""\
    ---
    kernelspec:
      name: python3
      display_name: Python 3
      language: python
    ---

    # A chapter with pool jobs

    ```{code-cell} ipython3
    :tags: [parameters]

    profile = "default"
    overrides = {}
    ```
    """)
CELL = "\n```{{code-cell}} ipython3\n{}\n```\n"


def _chapter(folder: Path, name: str, *cells: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.md"
    path.write_text(HEADER + "".join(CELL.format(c) for c in cells))
    return path


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper runs no code: gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("ANALYSIS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return tmp_path


def test_a_chapter_with_pool_jobs_ends_with_no_traceback_and_no_warning(env, capfd, monkeypatch):
    """When a chapter ends, its kernel is interrupted (SIGINT to its process group) and shut
    down: idle workers must not print KeyboardInterrupt tracebacks, and a kernel over IPC has
    no unencrypted-TCP warning to print (nor leaves its sockets in the current directory)."""
    src = env / "book"
    monkeypatch.chdir(env)
    _chapter(src, "01_jobs", "import time\nfrom analysis import workers\n"
                             "assert workers.run_jobs([(time.sleep, (0.1,))] * 2, 'naps', workers=2) == [None, None]")
    capfd.readouterr()
    book.run("smoke", book=src, out_dir=src)
    out, err = capfd.readouterr()
    log = out + err
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "without encryption" not in log, log
    assert not list(env.rglob("*ipc*")), "IPC sockets left in the working directory"
    cells = nbformat.read(src / "01_jobs.ipynb", as_version=4).cells
    injected = [c for c in cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]  # hidden in the HTML
    assert "'smoke'" in injected[0].source or '"smoke"' in injected[0].source
    own = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(own) == 1 and "remove-cell" not in own[0].metadata["tags"]  # shown


_DRIVER = """
import sys
from pathlib import Path
from analysis import book
src = Path(sys.argv[1])
try:
    book.run("smoke", book=src, out_dir=src)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process states from /proc")
def test_an_interrupted_run_stops_within_seconds_and_leaves_no_worker(env):
    """Ctrl-C on the runner (SIGINT to its process group, as a terminal sends it) while a
    chapter's pool jobs run: the runner stops within seconds, the chapter is recorded as
    interrupted, and neither the kernel nor a worker is left running."""
    src = env / "book"
    pids = src / "pids.json"
    _chapter(src, "01_long",
             "import json, os, time\nfrom analysis import workers\n"
             "workers.run_jobs([(time.sleep, (0.1,))] * 2, 'start', progress=False, workers=2)\n"
             "procs = workers._POOL['pool']._processes\n"
             f"open({str(pids)!r}, 'w').write(json.dumps([os.getpid(), *procs]))",
             "workers.run_jobs([(time.sleep, (300,))] * 2, 'long naps', progress=False, workers=2)")
    driver = env / "driver.py"
    driver.write_text(_DRIVER)
    runner = subprocess.Popen([sys.executable, str(driver), str(src)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        end = time.monotonic() + 120  # a kernel and two workers start (seconds; more on a loaded machine)
        while not pids.exists() and runner.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert pids.exists(), runner.communicate(timeout=5)
        time.sleep(1.0)  # the second cell's jobs are running
        kernel, *workers = json.loads(pids.read_text())
        assert len(workers) == 2 and all(_alive(p) for p in [kernel, *workers])
        t0 = time.monotonic()
        os.killpg(runner.pid, signal.SIGINT)
        out, err = runner.communicate(timeout=30)
        stopped = time.monotonic() - t0
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 130 and "interrupted" in out, (runner.returncode, out, err)
    assert stopped < 15, f"the run took {stopped:.1f} s to stop"
    end = time.monotonic() + 5
    while any(_alive(p) for p in [kernel, *workers]) and time.monotonic() < end:
        time.sleep(0.1)
    assert not [p for p in [kernel, *workers] if _alive(p)], "a kernel or worker outlived the run"
    manifest = json.loads((env / "run" / "manifest.json").read_text())
    assert manifest["chapters"]["01_long"]["status"] == "interrupted"
