"""Corpus sources: pinned source releases from PyPI, checked by sha256 before anything reads them.

An archive is found in PyPI's simple index (its JSON form, PEP 691) by name, version and
the pinned sha256, downloaded with the standard library into a temporary file, and kept
only if its bytes hash to the pin. Nothing of the package runs: no build backend, no
metadata preparation (``pip download`` of an sdist runs both before it could check).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import tomllib
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root, config_key

SOURCES = Path(__file__).resolve().parents[2] / "data" / "sources.toml"
INDEX = "https://pypi.org/simple"
ARCHIVES = (".tar.gz", ".zip", ".tar.bz2")
_urlopen = urllib.request.urlopen  # the one door to the network (tests replace it)


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


def files_hash(path: Path) -> str:
    """sha256 over a file, or over every file of a directory (names and contents, sorted)."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path} holds no files")
    return config_key({str(p.relative_to(path) if path.is_dir() else p.name): sha256_of(p) for p in files})


def _is_archive_of(filename: str, src: Source) -> bool:
    stem = src.name.lower().replace("-", "_")
    name = filename.lower().replace("-", "_")
    return name.startswith(f"{stem}_{src.version}.") and name.endswith(ARCHIVES)


def _find_archive(folder: Path, src: Source) -> Path | None:
    for p in sorted(folder.iterdir()):
        if _is_archive_of(p.name, src):
            return p
    return None


def _read(url: str, what: str, accept: str | None = None) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with _urlopen(request, timeout=120) as response:
            return response.read()
    except (urllib.error.URLError, OSError) as err:
        raise SourceError(f"cannot download {what} from {url}: {err}") from None


def _listed_file(src: Source) -> dict:
    """The index entry (filename, url, hashes) of the source archive of ``src`` whose
    listed sha256 is the pin."""
    name = src.name.lower().replace("_", "-").replace(".", "-")
    raw = _read(f"{INDEX}/{name}/", f"the PyPI listing of {src.name}",
                accept="application/vnd.pypi.simple.v1+json")
    try:
        files = [f for f in json.loads(raw)["files"] if _is_archive_of(f["filename"], src)]
    except (ValueError, KeyError, TypeError):
        raise SourceError(f"the PyPI listing of {src.name} is not the JSON simple API") from None
    if not files:
        raise SourceError(f"PyPI lists no source archive of {src.name}=={src.version}")
    for f in files:
        if f.get("hashes", {}).get("sha256", "").lower() == src.sha256:
            return f
    listed = ", ".join(f"{f['filename']} {f.get('hashes', {}).get('sha256', '?')}" for f in files)
    raise SourceError(f"checksum mismatch for {src.name}=={src.version}: expected {src.sha256}, "
                      f"PyPI lists {listed} (nothing was downloaded; check data/sources.toml)")


def fetch(src: Source) -> Path:
    """The verified source archive of ``src`` (downloaded once, then re-verified on reuse)."""
    folder = download_dir() / f"{src.name}-{src.version}"
    folder.mkdir(parents=True, exist_ok=True)
    archive = _find_archive(folder, src)
    if archive is None:
        entry = _listed_file(src)
        data = _read(entry["url"], f"{src.name}=={src.version}")
        digest = hashlib.sha256(data).hexdigest()
        if digest != src.sha256:
            raise SourceError(f"checksum mismatch for {src.name}=={src.version}: expected {src.sha256}, "
                              f"got {digest} (nothing was kept; check data/sources.toml)")
        archive = folder / Path(entry["filename"]).name
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".download-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, archive)
    digest = sha256_of(archive)
    if digest != src.sha256:
        archive.unlink()
        raise SourceError(f"checksum mismatch for {src.name}=={src.version}: expected {src.sha256}, "
                          f"got {digest} (the file was removed; check data/sources.toml)")
    return archive


def fetch_all(sources: list[Source], workers: int = 3) -> dict[str, Path]:
    """Fetch several sources in parallel (downloads spend most of their time waiting)."""
    with ThreadPoolExecutor(workers) as pool:
        return dict(zip((s.name for s in sources), pool.map(fetch, sources)))
