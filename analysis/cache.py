"""Artifact cache: results that take time, keyed by the exact config that produced them.

Layout: ``$ANALYSIS_CACHE/<kind>/<key>/`` (default ``.cache/analysis``), where
``key = sha256(json(config, sort_keys) + kind version)[:16]``. An artifact is a directory;
it exists only once complete: ``build`` writes into a temporary sibling directory
``.<key>.tmp-*`` which is renamed into place after ``build`` returns and a
``_complete.json`` marker is written. A crash mid-build leaves only the temporary
directory, which is never read (and is swept on the next build).

Damage is detected and healed. The marker holds a manifest, the sha256 of every file of the
artifact, which is checked on every load: a changed, missing or unexpected file (flipped
bytes in weights, a results table cut short, a deleted tokenizer) fails the check. If the
check or the caller's ``load`` fails on an existing artifact, the artifact is moved aside as
``.<key>.broken-*``, reported, and rebuilt: never silently trusted. Checking costs one read
of the artifact: sha256 runs at about 600 MB/s on one core of this 2-core CPU, so a
``paper`` checkpoint (~110M parameters, ~440 MB) costs about 0.8 s per load, the order of
reading its weights into a model at all; at that price every load checks every byte
(trusting file sizes or timestamps instead would miss bytes flipped in place).

Concurrent runs are safe: each artifact has a lock file ``.<key>.lock`` (``filelock``; the
OS releases it when its holder dies). The first process builds; a second one asking for the
same artifact waits, then reads the first one's result.

Long builds that can resume (pretraining) keep their partial state in
``scratch_dir(kind, config)``, which survives interruptions, is locked for the build that
asked for it, and is removed once the artifact is complete. ``save_atomic`` writes such a
state (or any file) via a temporary file and a rename; a full disk is a clear error that
names the path and the free space, and leaves no temporary file behind.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, TypeVar

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)
T = TypeVar("T")
MARKER = "_complete.json"
_BUILDS = threading.local()  # per thread: a stack of the scratch dirs each running build holds


class DamagedArtifact(Exception):
    """A cached artifact whose files do not match the manifest written when it completed."""


class DiskFull(OSError):
    """Writing a file failed for lack of space (the message names the path and the free space)."""


def cache_root() -> Path:
    """``$ANALYSIS_CACHE`` if set, else ``.cache/analysis`` under the current directory's repo."""
    env = os.environ.get("ANALYSIS_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return (_repo_root() / ".cache" / "analysis").resolve()


def _repo_root() -> Path:
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").exists() and (d / "analysis").is_dir():
            return d
    return Path(__file__).resolve().parents[1]


def _jsonable(obj):
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"cannot use {type(obj).__name__} in a cache key: {obj!r}")


def config_key(config, version: str = "1") -> str:
    """Stable 16-hex-digit hash of ``config`` (dict or dataclass) and ``version``."""
    text = json.dumps({"config": _jsonable(config), "version": version},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_dir(kind: str, config, version: str = "1") -> Path:
    """Where the artifact of ``kind`` built from ``config`` lives (whether or not it exists)."""
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"bad artifact kind {kind!r}")
    return cache_root() / kind / config_key(config, version)


def _lock(path: Path) -> FileLock:
    """The process-wide (reentrant) lock guarding ``path``: the file ``.<name>.lock`` beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path.parent / f".{path.name.lstrip('.')}.lock", is_singleton=True)


QUIET_WAIT_S = 5.0  # a lock held longer than this is a build worth saying we wait for


def _acquire(lock: FileLock, what: Path) -> None:
    """Take ``lock``, saying so if another process holds it longer than ``QUIET_WAIT_S`` (it
    may be building for hours; shorter holds are another process loading the same artifact)."""
    try:
        lock.acquire(timeout=QUIET_WAIT_S)
    except Timeout:
        log.warning("waiting for another process that holds %s", what)
        lock.acquire()


@contextlib.contextmanager
def _locked(path: Path):
    lock = _lock(path)
    _acquire(lock, path)
    try:
        yield
    finally:
        lock.release()


def scratch_path(kind: str, config, version: str = "1") -> Path:
    """Where ``scratch_dir`` keeps the partial state of this artifact's build (not locked, not
    created): for the other processes of a multi-process build, which read the main one's."""
    final = artifact_dir(kind, config, version)
    return final.parent / f".{final.name}.scratch"


def scratch_dir(kind: str, config, version: str = "1") -> Path:
    """A persistent working directory for a resumable build of this artifact. Only for a
    ``build`` running inside ``cached``: it is locked until that build ends, and removed when
    the build completes."""
    stack = _build_stack()
    if not stack:
        raise RuntimeError(f"scratch_dir({kind!r}, ...) is for a build running inside cached(): "
                           "the build's lock keeps two processes from sharing one partial state")
    path = scratch_path(kind, config, version)
    lock = _lock(path)
    _acquire(lock, path)
    stack[-1].append((path, lock))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _build_stack() -> list:
    """This thread's running builds (innermost last), each a list of (scratch dir, lock)."""
    if not hasattr(_BUILDS, "stack"):
        _BUILDS.stack = []
    return _BUILDS.stack


def is_cached(kind: str, config, version: str = "1") -> bool:
    """Whether the artifact was completed (its files are checked when it is loaded)."""
    return (artifact_dir(kind, config, version) / MARKER).is_file()


def file_manifest(root: Path) -> dict[str, str]:
    """``{relative path: sha256 hex}`` of every file under ``root`` except the marker."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MARKER:
            with open(p, "rb") as f:
                out[rel] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def verify(path: Path) -> None:
    """Raise ``DamagedArtifact`` unless the files under ``path`` are exactly those its marker
    lists, with the same sha256."""
    try:
        expected = json.loads((path / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DamagedArtifact(f"{path}: its marker has no readable file manifest ({type(err).__name__}: "
                              "built before manifests were kept, or edited)") from None
    actual = file_manifest(path)
    problems = {"missing": sorted(set(expected) - set(actual)),
                "unexpected": sorted(set(actual) - set(expected)),
                "changed": sorted(n for n in set(expected) & set(actual) if expected[n] != actual[n])}
    if any(problems.values()):
        raise DamagedArtifact(f"{path}: " + "; ".join(f"{k} {v}" for k, v in problems.items() if v))


def cached(kind: str, config, build: Callable[[Path], None], load: Callable[[Path], T],
           version: str = "1") -> T:
    """Return ``load(dir)`` of the artifact for ``config``, building it first if needed.

    ``build(tmp_dir)`` writes the artifact's files into ``tmp_dir``; ``load(dir)`` reads
    them back. ``version`` is the code version that matters: bump it when the build
    changes meaning, and old artifacts stop matching. Another process building the same
    artifact is waited for.
    """
    final = artifact_dir(kind, config, version)
    with _locked(final):
        if (final / MARKER).is_file():
            try:
                verify(final)
                return load(final)
            except MemoryError:  # the machine's state, not the artifact's
                raise
            except Exception as err:  # a damaged artifact is rebuilt, never trusted
                _move_aside(kind, final, err)
        elif final.is_dir():  # no marker: not ours to trust
            shutil.rmtree(final)
        elif final.exists():
            final.unlink()
        _build(kind, config, version, build, final)
        return load(final)


def _move_aside(kind: str, final: Path, err: Exception) -> None:
    broken = final.parent / f".{final.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 10**9}"
    log.warning("cached %s artifact %s failed to load (%s: %s); moved to %s and rebuilding",
                kind, final, type(err).__name__, err, broken)
    os.replace(final, broken)


def _build(kind: str, config, version: str, build: Callable[[Path], None], final: Path) -> None:
    """Run ``build`` into a temporary directory and rename it into place with its marker
    (the caller holds the artifact's lock)."""
    _sweep(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    stack = _build_stack()
    stack.append([])
    try:
        build(tmp)
        marker = {"kind": kind, "key": final.name, "version": version, "config": _jsonable(config),
                  "built": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": file_manifest(tmp)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        os.replace(tmp, final)  # atomic on one filesystem; final does not exist here
        for scratch, _ in stack[-1]:
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for _, lock in stack.pop():
            lock.release()


def _sweep(final: Path) -> None:
    """Remove leftovers of interrupted builds of this artifact: under its lock, any temporary
    directory belongs to a process that died mid-build."""
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(p, ignore_errors=True)


def save_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers see the old file or the new one,
    never half of one. On any failure the temporary file is removed; a failure for lack of
    space (``OSError`` ENOSPC/EDQUOT, or torch's ``RuntimeError: [enforce fail at
    inline_container.cc...]`` from a failed write) raises ``DiskFull`` naming the path and the
    free space."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _out_of_space(err):
            free = shutil.disk_usage(path.parent).free
            raise DiskFull(errno.ENOSPC, f"could not write {path}: {type(err).__name__}: {err}. "
                           f"{free / 1e6:.1f} MB free on its filesystem; free some space and run "
                           "again (a resumable run restarts from its last saved state)") from err
        raise


def _out_of_space(err: BaseException) -> bool:
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(err, RuntimeError) and "inline_container.cc" in str(err)


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename."""
    text = json.dumps(_jsonable(obj), indent=1, sort_keys=True)
    save_atomic(path, lambda tmp: tmp.write_text(text))
