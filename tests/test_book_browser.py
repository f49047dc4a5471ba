"""The rendered book, opened in a real (headless) Chromium: every page loads, every internal
link resolves (file and anchor), every image is present and decoded. Runs after the book is
built (``make test`` runs it last); skipped with a message where Chromium is not installed."""
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium); "
                                                "the browser check of the rendered book is skipped"),
    pytest.mark.skipif(not (HTML / "index.html").exists(),
                       reason="the book is not built yet: run `python -m analysis.book run --profile "
                              "smoke && python -m analysis.book html` (make test does)"),
]


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _pages():
    return sorted((HTML / "book").glob("*.html"))


def test_every_chapter_page_is_built():
    built = {p.stem for p in _pages()}
    chapters = {p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.md")}
    assert chapters <= built, f"chapters without a page: {sorted(chapters - built)}"


def test_pages_links_and_images(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    problems, ids_of = [], {}

    def ids(path: Path):
        if path not in ids_of:
            page.goto(path.as_uri())
            ids_of[path] = set(page.evaluate("Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        return ids_of[path]

    for html in _pages():
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        problems += [f"{html.name}: image {src} did not load" for src, ok in images if not ok]
        links = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        for href in links:
            url = urlparse(href)
            if url.scheme != "file":
                continue
            target = Path(unquote(url.path))
            if not target.exists():
                problems.append(f"{html.name}: broken link {href}")
            elif url.fragment and target.suffix == ".html" and url.fragment not in ids(target):
                problems.append(f"{html.name}: link to missing anchor {href}")
    page.close()
    assert not problems, "\n".join(problems)


def test_intro_screenshot(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    page.goto((HTML / "book" / "00_intro.html").as_uri())
    out = ROOT / "_build" / "screenshots" / "00_intro.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    page.close()
    assert out.stat().st_size > 10_000
