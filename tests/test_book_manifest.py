"""The run manifest (analysis.book): every chapter's record survives concurrent runners and
interruptions."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from analysis import book


def _one_chapter_book(tmp_path):
    src = tmp_path / "book"
    src.mkdir()
    (src / "01_tiny.md").write_text("# Tiny\n\n```{code-cell} python\n1 + 1\n```\n")
    return src


def _manifest(run_dir):
    return json.loads((run_dir / "manifest.json").read_text())


@pytest.mark.parametrize("error,status", [(KeyboardInterrupt(), "interrupted"), (SystemExit(143), "interrupted"),
                                          (OSError("kernel died"), "failed")])
def test_a_chapter_that_does_not_finish_is_recorded_as_such(tmp_path, monkeypatch, error, status):
    monkeypatch.setenv("ANALYSIS_RUN_DIR", str(tmp_path / "run"))

    def stop(*args, **kwargs):
        raise error
    monkeypatch.setattr(book, "execute", stop)
    with pytest.raises(type(error)):
        book.run("smoke", book=_one_chapter_book(tmp_path), out_dir=tmp_path)
    entry = _manifest(tmp_path / "run")["chapters"]["01_tiny"]
    assert entry["status"] == status
    assert entry["error"].startswith(type(error).__name__)


_SLOW_CHAPTER = """
import sys, time
from analysis import book

def execute(md, params, out_dir):
    print("started", md.stem, flush=True)
    time.sleep(120)

book.execute = execute
sys.exit(book.main(["run", "--profile", "smoke", "--only", "01", "--no-html"]))
"""


def test_sigterm_records_the_running_chapter_as_interrupted(tmp_path):
    env = {**os.environ, "ANALYSIS_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": os.getcwd(), "TQDM_DISABLE": "1"}
    runner = subprocess.Popen([sys.executable, "-c", _SLOW_CHAPTER], env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while "started " not in line:
            line = runner.stdout.readline()
            assert line, "the runner ended before its first chapter"
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        runner.kill()
    chapter = line.split("started ")[1].strip()
    entry = _manifest(tmp_path / "run")["chapters"][chapter]
    assert entry["status"] == "interrupted" and entry["error"] == "SystemExit: 143"


_WRITER = """
import sys
from analysis import book
for i in range(int(sys.argv[2])):
    book.record_chapter({"chapter": f"{sys.argv[1]}_{i:02d}", "status": "ok"}, {"profile": "smoke"})
"""


def test_two_runners_recording_at_once_lose_no_chapter(tmp_path):
    env = {**os.environ, "ANALYSIS_RUN_DIR": str(tmp_path / "run"), "PYTHONPATH": os.getcwd()}
    n = 40
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, name, str(n)], env=env) for name in ("a", "b")]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    chapters = _manifest(tmp_path / "run")["chapters"]
    assert sorted(chapters) == sorted(f"{name}_{i:02d}" for name in ("a", "b") for i in range(n))
    assert not [p.name for p in (tmp_path / "run").iterdir() if ".tmp-" in p.name]
