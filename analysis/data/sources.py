"""Corpus sources: pinned source releases from PyPI, fetched with pip and checked by sha256."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root

SOURCES = Path(__file__).resolve().parents[2] / "data" / "sources.toml"


class SourceError(RuntimeError):
    """A source release cannot be obtained or does not match its pinned checksum."""


@dataclass(frozen=True)
class Source:
    name: str
    version: str
    sha256: str
    license: str
    sets: tuple


def read_sources(path: Path = SOURCES, corpus_set: str | None = None) -> list[Source]:
    """The entries of ``sources.toml`` (those whose ``sets`` contain ``corpus_set``)."""
    try:
        table = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SourceError(f"no sources file at {path}") from None
    except tomllib.TOMLDecodeError as err:
        raise SourceError(f"{path} is not valid TOML: {err}") from None
    out = []
    for entry in table.get("package", []):
        missing = {"name", "version", "sha256", "license", "sets"} - set(entry)
        if missing:
            raise SourceError(f"{path}: entry {entry.get('name', '?')} lacks {sorted(missing)}")
        out.append(Source(entry["name"], entry["version"], entry["sha256"].lower(),
                          entry["license"], tuple(entry["sets"])))
    if corpus_set is not None:
        out = [s for s in out if corpus_set in s.sets]
        if not out:
            raise SourceError(f"no source in {path} belongs to the set {corpus_set!r}")
    return out


def download_dir() -> Path:
    path = cache_root() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _find_archive(folder: Path, src: Source) -> Path | None:
    stem = src.name.lower().replace("-", "_")
    for p in sorted(folder.iterdir()):
        name = p.name.lower().replace("-", "_")
        if name.startswith(f"{stem}_{src.version}.") and name.endswith((".tar.gz", ".zip", ".tar.bz2")):
            return p
    return None


def fetch(src: Source) -> Path:
    """The verified source archive of ``src`` (downloaded with pip once, then reused)."""
    folder = download_dir() / f"{src.name}-{src.version}"
    folder.mkdir(parents=True, exist_ok=True)
    archive = _find_archive(folder, src)
    if archive is None:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"{src.name}=={src.version}", "-d", str(folder)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        archive = _find_archive(folder, src)
        if result.returncode or archive is None:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise SourceError(f"pip could not download {src.name}=={src.version}: {' | '.join(tail)}")
    digest = sha256_of(archive)
    if digest != src.sha256:
        archive.unlink()
        raise SourceError(f"checksum mismatch for {src.name}=={src.version}: expected {src.sha256}, "
                          f"got {digest} (the file was removed; check data/sources.toml)")
    return archive


def fetch_all(sources: list[Source], workers: int = 3) -> dict[str, Path]:
    """Fetch several sources in parallel (pip spends most of its time waiting)."""
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip((s.name for s in sources), pool.map(fetch, sources)))
