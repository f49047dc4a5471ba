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
