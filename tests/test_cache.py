import json
import os

import pytest

from analysis import cache


def _build_text(text):
    def build(out):
        (out / "value.txt").write_text(text)
    return build


def _load(path):
    return (path / "value.txt").read_text()


def test_key_is_stable_and_order_independent():
    a = cache.config_key({"x": 1, "y": [1, 2]})
    assert a == cache.config_key({"y": [1, 2], "x": 1})
    assert a != cache.config_key({"x": 2, "y": [1, 2]})
    assert a != cache.config_key({"x": 1, "y": [1, 2]}, version="2")
    assert len(a) == 16


def test_build_once_then_hit(cache_dir):
    calls = []

    def build(out):
        calls.append(1)
        (out / "value.txt").write_text("v")
    assert cache.cached("thing", {"a": 1}, build, _load) == "v"
    assert cache.cached("thing", {"a": 1}, build, _load) == "v"
    assert len(calls) == 1
    assert cache.cached("thing", {"a": 2}, build, _load) == "v"  # changed parameter: rebuilt
    assert len(calls) == 2


def test_crash_mid_write_leaves_nothing_trusted(cache_dir):
    def crashing(out):
        (out / "value.txt").write_text("half")
        raise KeyboardInterrupt  # the process dies mid-build
    with pytest.raises(KeyboardInterrupt):
        cache.cached("thing", {"a": 1}, crashing, _load)
    assert not cache.is_cached("thing", {"a": 1})
    assert not cache.artifact_dir("thing", {"a": 1}).exists()
    assert cache.cached("thing", {"a": 1}, _build_text("whole"), _load) == "whole"


def test_leftover_temp_dir_from_killed_process_is_never_read(cache_dir):
    final = cache.artifact_dir("thing", {"a": 1})
    tmp = final.parent / f".{final.name}.tmp-killed"
    tmp.mkdir(parents=True)
    (tmp / "value.txt").write_text("half")
    assert cache.cached("thing", {"a": 1}, _build_text("whole"), _load) == "whole"


def test_directory_without_marker_is_rebuilt(cache_dir):
    final = cache.artifact_dir("thing", {"a": 1})
    final.mkdir(parents=True)
    (final / "value.txt").write_text("stale")
    assert cache.cached("thing", {"a": 1}, _build_text("fresh"), _load) == "fresh"


def test_corrupt_artifact_is_moved_aside_and_rebuilt(cache_dir, caplog):
    cache.cached("thing", {"a": 1}, _build_text("1"), lambda p: int(_load(p)))
    (cache.artifact_dir("thing", {"a": 1}) / "value.txt").write_text("garbage")
    value = cache.cached("thing", {"a": 1}, _build_text("2"), lambda p: int(_load(p)))
    assert value == 2
    assert "failed to load" in caplog.text
    assert any(p.name.startswith(".") and ".broken-" in p.name
               for p in cache.artifact_dir("thing", {"a": 1}).parent.iterdir())


def test_marker_records_the_config(cache_dir):
    cache.cached("thing", {"a": 1}, _build_text("x"), _load)
    marker = json.loads((cache.artifact_dir("thing", {"a": 1}) / cache.MARKER).read_text())
    assert marker["config"] == {"a": 1} and marker["kind"] == "thing"


def test_write_json_atomic_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "m.json"
    cache.write_json_atomic(path, {"ok": 1})
    with pytest.raises(TypeError):
        cache.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_cache_root_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == (tmp_path / "c").resolve()
    with pytest.raises(ValueError):
        cache.artifact_dir("../escape", {})


# --- damage: the file manifest ------------------------------------------------------------

def _results_build(out):
    (out / "results.csv").write_text("layer,acc\n" + "".join(f"{i},0.{i}\n" for i in range(1, 9)))
    (out / "weights.bin").write_bytes(bytes(range(256)) * 4)


def _results_load(path):
    return len((path / "results.csv").read_text().splitlines()) - 1


@pytest.mark.parametrize("damage,report", [
    (lambda d: (d / "weights.bin").write_bytes(b"\x01" + (d / "weights.bin").read_bytes()[1:]), "changed ['weights.bin']"),
    (lambda d: (d / "results.csv").write_text("layer,acc\n1,0.1\n2,0.2\n"), "changed ['results.csv']"),
    (lambda d: (d / "results.csv").write_text((d / "results.csv").read_text()[:-7]), "changed ['results.csv']"),
    (lambda d: (d / "weights.bin").unlink(), "missing ['weights.bin']"),
    (lambda d: (d / "extra.txt").write_text("x"), "unexpected ['extra.txt']"),
])
def test_damaged_files_are_detected_moved_aside_and_rebuilt(cache_dir, caplog, damage, report):
    """The load itself would accept every one of these (a shorter table is still a table)."""
    calls = []

    def build(out):
        calls.append(1)
        _results_build(out)
    assert cache.cached("probe", {"a": 1}, build, _results_load) == 8
    final = cache.artifact_dir("probe", {"a": 1})
    damage(final)
    assert cache.cached("probe", {"a": 1}, build, _results_load) == 8
    assert len(calls) == 2 and report in caplog.text
    broken = [p for p in final.parent.iterdir() if ".broken-" in p.name]
    assert len(broken) == 1
    with pytest.raises(cache.DamagedArtifact):
        cache.verify(broken[0])
    cache.verify(final)


def test_the_manifest_lists_every_file_with_its_sha256(cache_dir):
    import hashlib
    cache.cached("probe", {"a": 1}, _results_build, _results_load)
    final = cache.artifact_dir("probe", {"a": 1})
    files = json.loads((final / cache.MARKER).read_text())["files"]
    assert files == {n: hashlib.sha256((final / n).read_bytes()).hexdigest()
                     for n in ("results.csv", "weights.bin")}


def test_an_artifact_without_a_manifest_is_not_trusted(cache_dir, caplog):
    cache.cached("thing", {"a": 1}, _build_text("old"), _load)
    marker = cache.artifact_dir("thing", {"a": 1}) / cache.MARKER
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "files"}))
    assert cache.cached("thing", {"a": 1}, _build_text("new"), _load) == "new"
    assert "no readable file manifest" in caplog.text


def test_any_load_failure_of_an_intact_artifact_rebuilds_it(cache_dir):
    """E.g. a tokenizer the checker passes but the loader rejects: rebuilt, not failing forever."""
    seen = []

    def picky(path):
        seen.append(_load(path))
        if seen[-1] == "first":
            raise OSError("cannot load the tokenizer")
        return seen[-1]
    cache.cached("thing", {"a": 1}, _build_text("first"), _load)
    assert cache.cached("thing", {"a": 1}, _build_text("second"), picky) == "second"
    assert seen == ["first", "second"]
    # twice in the same second: distinct names for the broken copies
    cache.cached("thing", {"a": 2}, _build_text("first"), _load)
    for _ in range(2):
        (cache.artifact_dir("thing", {"a": 2}) / "value.txt").write_text("x")
        cache.cached("thing", {"a": 2}, _build_text("first"), _load)
    assert len([p for p in cache.artifact_dir("thing", {"a": 2}).parent.iterdir()
                if p.name.startswith(f".{cache.config_key({'a': 2})}.broken-")]) == 2


def test_a_failing_build_of_a_fresh_artifact_caches_nothing(cache_dir):
    def diverged(out):
        (out / "value.txt").write_text("nan")
        raise FloatingPointError("loss is nan at step 2")
    with pytest.raises(FloatingPointError):
        cache.cached("thing", {"a": 1}, diverged, _load)
    assert not cache.artifact_dir("thing", {"a": 1}).exists()
    assert [p.name for p in cache.artifact_dir("thing", {"a": 1}).parent.iterdir()
            if not p.name.endswith(".lock")] == []


# --- concurrency: one builder per artifact --------------------------------------------------

_WORKER = r"""
import logging, sys, time
from pathlib import Path
from analysis import cache
logging.basicConfig(filename=sys.argv[2], level=logging.WARNING)
root = Path(sys.argv[1])

def build(out):
    with open(root / "builds.txt", "a") as f:
        f.write(sys.argv[3] + "\n")
    (root / "started").touch()
    while not (root / "release").exists():
        time.sleep(0.05)
    (out / "value.txt").write_text(sys.argv[3])

print(cache.cached("shared", {"a": 1}, build, lambda p: (p / "value.txt").read_text()))
"""


def _start(tmp_path, name, env):
    import subprocess
    import sys
    return subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path), str(tmp_path / f"{name}.log"), name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, seconds=60.0):
    import time
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_a_second_process_waits_for_the_first_and_reads_its_result(cache_dir, tmp_path):
    env = {**os.environ, "ANALYSIS_CACHE": str(cache_dir), "PYTHONPATH": os.getcwd()}
    first = _start(tmp_path, "first", env)
    _wait_for(lambda: (tmp_path / "started").exists())
    second = _start(tmp_path, "second", env)
    _wait_for(lambda: "waiting for another process" in
              ((tmp_path / "second.log").read_text() if (tmp_path / "second.log").exists() else ""))
    (tmp_path / "release").touch()
    outs = [p.communicate(timeout=60) for p in (first, second)]
    assert [p.returncode for p in (first, second)] == [0, 0], outs
    assert [o.strip() for o, _ in outs] == ["first", "first"]
    assert (tmp_path / "builds.txt").read_text() == "first\n"


def test_scratch_dir_is_locked_for_its_build_and_removed_when_it_completes(cache_dir):
    import subprocess
    import sys
    with pytest.raises(RuntimeError, match="inside cached"):
        cache.scratch_dir("thing", {"a": 1})
    try_lock = ("import sys, filelock\ntry:\n filelock.FileLock(sys.argv[1]).acquire(timeout=0)\n"
                "except filelock.Timeout:\n sys.exit(3)")
    seen = {}

    def build(out):
        scratch = cache.scratch_dir("thing", {"a": 1})
        (scratch / "state.pt").write_text("partial")
        lock = scratch.parent / f"{scratch.name}.lock"
        seen["scratch"], seen["lock"] = scratch, lock
        seen["other process"] = subprocess.run([sys.executable, "-c", try_lock, str(lock)]).returncode
        (out / "value.txt").write_text("done")
    assert cache.cached("thing", {"a": 1}, build, _load) == "done"
    assert seen["other process"] == 3  # could not take the scratch lock while the build ran
    assert not seen["scratch"].exists()
    assert subprocess.run([sys.executable, "-c", try_lock, str(seen["lock"])]).returncode == 0


def test_a_failed_build_keeps_its_scratch_state_for_the_next_attempt(cache_dir):
    def crash(out):
        (cache.scratch_dir("thing", {"a": 1}) / "state.pt").write_text("step 100")
        raise KeyboardInterrupt

    def resume(out):
        (out / "value.txt").write_text((cache.scratch_dir("thing", {"a": 1}) / "state.pt").read_text())
    with pytest.raises(KeyboardInterrupt):
        cache.cached("thing", {"a": 1}, crash, _load)
    assert cache.cached("thing", {"a": 1}, resume, _load) == "step 100"


# --- saving resumable state -------------------------------------------------------------

@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                 "file data/3: file write failed"),
])
def test_a_full_disk_is_a_clear_error_and_leaves_no_temporary_file(tmp_path, failure):
    path = tmp_path / "state.pt"
    path.write_text("step 100")

    def writer(tmp):
        tmp.write_bytes(b"half a state")
        raise failure
    with pytest.raises(cache.DiskFull, match=r"could not write .*state\.pt.* MB free on its filesystem") as err:
        cache.save_atomic(path, writer)
    assert str(path) in str(err.value)
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
    assert path.read_text() == "step 100"


def test_other_write_errors_pass_through_and_leave_no_temporary_file(tmp_path):
    def writer(tmp):
        tmp.write_bytes(b"half")
        raise ValueError("not a state")
    with pytest.raises(ValueError, match="not a state"):
        cache.save_atomic(tmp_path / "state.pt", writer)
    assert list(tmp_path.iterdir()) == []
    cache.save_atomic(tmp_path / "state.pt", lambda tmp: tmp.write_text("ok"))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]
