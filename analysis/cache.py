"""Artifact cache: results that take time, keyed by the exact config that produced them.

Layout: ``$ANALYSIS_CACHE/<kind>/<key>/`` (default ``.cache/analysis``), where
``key = sha256(json(config, sort_keys) + kind version)[:16]``. An artifact is a directory;
it exists only once complete: ``build`` writes into a temporary sibling directory
``.<key>.tmp-*`` which is renamed into place after ``build`` returns and a
``_complete.json`` marker is written. A crash mid-build leaves only the temporary
directory, which is never read (and is swept on the next build). If ``load`` fails on an
existing artifact (truncated, corrupt, wrong format) the artifact is moved aside as
``.<key>.broken-*``, reported, and rebuilt: never silently trusted.

Long builds that can resume (pretraining) keep their partial state in
``scratch_dir(kind, config)``, which survives interruptions and is removed once the
artifact is complete.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
MARKER = "_complete.json"


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


def scratch_dir(kind: str, config, version: str = "1") -> Path:
    """A persistent working directory for a resumable build of this artifact."""
    final = artifact_dir(kind, config, version)
    path = final.parent / f".{final.name}.scratch"
    path.mkdir(parents=True, exist_ok=True)
    return path


def is_cached(kind: str, config, version: str = "1") -> bool:
    return (artifact_dir(kind, config, version) / MARKER).is_file()


def cached(kind: str, config, build: Callable[[Path], None], load: Callable[[Path], T],
           version: str = "1") -> T:
    """Return ``load(dir)`` of the artifact for ``config``, building it first if needed.

    ``build(tmp_dir)`` writes the artifact's files into ``tmp_dir``; ``load(dir)`` reads
    them back. ``version`` is the code version that matters: bump it when the build
    changes meaning, and old artifacts stop matching.
    """
    final = artifact_dir(kind, config, version)
    if (final / MARKER).is_file():
        try:
            return load(final)
        except Exception as err:  # a corrupt artifact is rebuilt, never trusted
            broken = final.parent / f".{final.name}.broken-{int(time.time())}"
            log.warning("cached %s artifact %s failed to load (%s: %s); moved to %s and rebuilding",
                        kind, final, type(err).__name__, err, broken)
            os.replace(final, broken)
    elif final.exists():  # no marker: not ours to trust
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep(final)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        build(tmp)
        marker = {"kind": kind, "key": final.name, "version": version,
                  "config": _jsonable(config), "built": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (tmp / MARKER).write_text(json.dumps(marker, indent=1, sort_keys=True))
        os.replace(tmp, final)  # atomic on one filesystem; final does not exist here
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    scratch = final.parent / f".{final.name}.scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    return load(final)


def _sweep(final: Path) -> None:
    """Remove leftovers of interrupted builds of this artifact (older than a minute)."""
    now = time.time()
    for p in final.parent.glob(f".{final.name}.tmp-*"):
        try:
            if now - p.stat().st_mtime > 60:
                shutil.rmtree(p, ignore_errors=True)
        except FileNotFoundError:
            pass


def write_json_atomic(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_jsonable(obj), f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
