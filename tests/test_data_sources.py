"""Source archives are checked against their sha256 pin before anything reads them, and
nothing of the package runs (issue 23). PyPI is replaced by a fake index in memory."""
import hashlib
import io
import json

import pytest

from analysis.data import sources
from analysis.data.sources import Source, SourceError, fetch

ARCHIVE = b"the bytes of demo_pkg-1.0.tar.gz"  # fetch never opens it
PIN = hashlib.sha256(ARCHIVE).hexdigest()


class FakePyPI:
    """Answers the JSON simple index of ``demo-pkg`` (listing ``listed`` as the sdist's
    sha256) and serves ``served`` as the archive; records every URL asked for."""

    def __init__(self, listed: str, served: bytes = ARCHIVE):
        self.listed, self.served, self.urls = listed, served, []

    def __call__(self, request, timeout):
        self.urls.append(request.full_url)
        if request.full_url == f"{sources.INDEX}/demo-pkg/":
            assert request.get_header("Accept") == "application/vnd.pypi.simple.v1+json"
            files = [{"filename": "demo_pkg-1.0-py3-none-any.whl", "url": "https://files/demo.whl",
                      "hashes": {"sha256": "1" * 64}},
                     {"filename": "demo_pkg-1.0.tar.gz", "url": "https://files/demo_pkg-1.0.tar.gz",
                      "hashes": {"sha256": self.listed}}]
            return io.BytesIO(json.dumps({"files": files}).encode())
        assert request.full_url == "https://files/demo_pkg-1.0.tar.gz"
        return io.BytesIO(self.served)


def demo(pin: str) -> Source:
    return Source("demo-pkg", "1.0", pin, "MIT", ("smoke",))


def leftovers(cache_dir):
    return sorted(p.name for p in (cache_dir / "downloads" / "demo-pkg-1.0").iterdir())


def test_wrong_pin_fails_before_any_download(cache_dir, monkeypatch):
    pypi = FakePyPI(listed=PIN)
    monkeypatch.setattr(sources, "_urlopen", pypi)
    with pytest.raises(SourceError, match="checksum mismatch for demo-pkg==1.0.*nothing was downloaded"):
        fetch(demo("0" * 64))
    assert pypi.urls == [f"{sources.INDEX}/demo-pkg/"]  # the archive was never asked for
    assert leftovers(cache_dir) == []


def test_tampered_archive_is_never_kept(cache_dir, monkeypatch):
    monkeypatch.setattr(sources, "_urlopen", FakePyPI(listed=PIN, served=ARCHIVE + b"!"))
    with pytest.raises(SourceError, match="checksum mismatch.*nothing was kept"):
        fetch(demo(PIN))
    assert leftovers(cache_dir) == []


def test_verified_archive_is_kept_and_reverified_on_reuse(cache_dir, monkeypatch):
    pypi = FakePyPI(listed=PIN)
    monkeypatch.setattr(sources, "_urlopen", pypi)
    path = fetch(demo(PIN))
    assert path.name == "demo_pkg-1.0.tar.gz" and path.read_bytes() == ARCHIVE
    assert fetch(demo(PIN)) == path and len(pypi.urls) == 2  # reused: no new request
    path.write_bytes(b"damaged")
    with pytest.raises(SourceError, match="the file was removed"):
        fetch(demo(PIN))
    assert leftovers(cache_dir) == []


def test_unreachable_index_is_a_clear_error(cache_dir, monkeypatch):
    def offline(request, timeout):
        raise sources.urllib.error.URLError("no route")
    monkeypatch.setattr(sources, "_urlopen", offline)
    with pytest.raises(SourceError, match="cannot download the PyPI listing of demo-pkg"):
        fetch(demo(PIN))
