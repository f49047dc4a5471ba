"""The rendered book, opened in a real (headless) Chromium: every page loads, every internal
link resolves (file and anchor), every image is present and decoded; with the network off,
the math renders (MathJax is served with the book) and no page needs anything online; no page
shows a second parameters cell. Runs after the book is built (``make test`` runs it last);
skipped with a message where Chromium is not installed."""
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


@pytest.fixture
def offline(browser):
    """A page with the network off (every request that is not a file of the book is aborted
    and recorded) -> (page, blocked URLs)."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400}, offline=True)
    blocked = []

    def local_only(route):
        if route.request.url.startswith("file:"):
            return route.continue_()
        blocked.append(route.request.url)
        return route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    yield page, blocked
    context.close()


_TEXT_OUTSIDE_CODE = """() => {
    const body = document.body.cloneNode(true);
    body.querySelectorAll('pre, script, style, .highlight, mjx-assistive-mml').forEach(e => e.remove());
    return body.textContent;
}"""


def test_formulas_render_with_the_network_off(offline):
    page, blocked = offline
    page.goto((HTML / "book" / "05_ssm_interpret.html").as_uri())
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")  # typesetting done
    math = page.evaluate("""() => Array.from(document.querySelectorAll('span.math, div.math'))
                               .map(e => e.querySelector('mjx-container') !== null)""")
    assert len(math) >= 5 and all(math), f"{math.count(False)} of {len(math)} formulas not typeset"
    text = page.evaluate(_TEXT_OUTSIDE_CODE)
    raw = [m for m in ("\\(", "\\[") if m in text]
    assert not raw, f"raw LaTeX delimiters {raw} left on the page"
    assert not blocked, f"the page asked the network for {blocked}"


def test_no_chapter_page_shows_a_second_parameters_cell(offline):
    page, _ = offline
    problems = []
    for html in _pages():
        page.goto(html.as_uri())
        cells = page.evaluate("""() => Array.from(document.querySelectorAll('div.cell'))
                                   .map(c => [c.className, c.querySelector('.cell_input')?.textContent ?? ''])""")
        injected = [c for c, _ in cells if "tag_injected-parameters" in c]
        own = [c for c, _ in cells if "tag_parameters" in c.split()]
        papermill = [src for _, src in cells if src.lstrip().startswith("# Parameters")]
        if injected or papermill or len(own) > 1:
            problems.append(f"{html.name}: {len(own)} parameters cell(s), {len(injected) + len(papermill)} injected")
    assert not problems, "\n".join(problems)
