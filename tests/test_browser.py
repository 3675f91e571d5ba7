"""The rendered book in a real browser: headless Chromium opens every page over http.

Per page: under 10 MB, no console errors, every audio player loads a finite, positive duration from a
compressed file beside the page (no sound inside the HTML), every image loads, every equation is typeset
by the MathJax served with the book, and each chapter's Colab button opens that chapter's notebook in
the repository.

FLOWSEP_BUILT_BOOK=<build folder> (e.g. _build) tests the HTML of an earlier build instead of building
the book at the smoke profile; pages that build did not render are skipped.

Console errors that are ignored, because the test machine is offline and nothing of ours causes them:
failed loads of resources from other hosts than the local server (fonts from CDNs) and of
``/favicon.ico`` (the book has none).
"""
import functools
import http.server
import os
import re
import threading
from urllib.parse import urlparse

import pytest
import yaml

from flowsep import book_build

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ROOT = book_build.find_root()
PAGES = book_build.toc_files(ROOT)
CHAPTER_ENTRIES = {str(p.relative_to(ROOT).with_suffix("")) for p in book_build.chapters(ROOT)}

pytestmark = pytest.mark.slow
MAX_PAGE_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def book(request):
    """The session's smoke build (``built_book`` of conftest), or the build named by $FLOWSEP_BUILT_BOOK."""
    from pathlib import Path
    from types import SimpleNamespace

    folder = os.environ.get("FLOWSEP_BUILT_BOOK")
    if not folder:
        return request.getfixturevalue("built_book")
    html = Path(folder).resolve() / "html"
    if not (html / "index.html").is_file():
        pytest.fail(f"FLOWSEP_BUILT_BOOK={folder}: no html/index.html there; build the book first")
    return SimpleNamespace(root=ROOT, out=html.parent, html=html)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(book):
    handler = functools.partial(QuietHandler, directory=str(book.html))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def ignorable(entry: dict, local: str) -> bool:
    """A console error caused by the offline network or the missing favicon, not by the book."""
    message = entry.get("message", "")
    if "favicon.ico" in message:
        return True
    urls = re.findall(r"https?://[^\s\"')]+", message)
    return bool(urls) and all(urlparse(u).netloc != urlparse(local).netloc for u in urls)


def expected_colab_url(entry: str) -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = urlparse(config["repository"]["url"]).path.strip("/")
    branch = config["repository"]["branch"]
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{repo}/blob/{branch}/{entry}.ipynb"


WAIT_FOR_MEDIA = """
const done = arguments[arguments.length - 1];
const audio = Array.from(document.querySelectorAll('audio'));
const durations = Promise.all(audio.map(a => new Promise(resolve => {
    if (a.readyState >= 1) { resolve(a.duration); return; }
    a.addEventListener('loadedmetadata', () => resolve(a.duration), {once: true});
    a.addEventListener('error', () => resolve(-1), {once: true});
    a.preload = 'metadata';
    a.load();
})));
const images = Promise.all(Array.from(document.images).map(img => new Promise(resolve => {
    if (img.complete) { resolve([img.currentSrc.slice(0, 80), img.naturalWidth]); return; }
    img.addEventListener('load', () => resolve([img.currentSrc.slice(0, 80), img.naturalWidth]), {once: true});
    img.addEventListener('error', () => resolve([img.currentSrc.slice(0, 80), 0]), {once: true});
})));
const sources = audio.map(a => a.currentSrc || a.src);
Promise.all([durations, images]).then(([d, i]) => done({durations: d, images: i, sources: sources}));
"""


WAIT_FOR_MATH = """
const done = arguments[arguments.length - 1];
const untypeset = () => Array.from(document.querySelectorAll('span.math, div.math'))
    .filter(e => !e.querySelector('mjx-container')).map(e => e.textContent.slice(0, 60));
const total = document.querySelectorAll('span.math, div.math').length;
if (!window.MathJax || !window.MathJax.startup || !window.MathJax.startup.promise) {
    done({mathjax: false, total: total, untypeset: untypeset()});
} else {
    window.MathJax.startup.promise.then(() => done({mathjax: true, total: total, untypeset: untypeset()}));
}
"""


@pytest.mark.parametrize("entry", PAGES)
def test_page_in_chromium(entry, book, server, browser):
    page = book.html / f"{entry}.html"
    if not page.is_file() and os.environ.get("FLOWSEP_BUILT_BOOK"):
        pytest.skip(f"{entry} is not in the build at $FLOWSEP_BUILT_BOOK")
    text = page.read_text()
    assert page.stat().st_size < MAX_PAGE_BYTES, f"{entry}: {page.stat().st_size / 2**20:.1f} MB"
    assert "data:audio" not in text, f"{entry}: sound embedded in the HTML instead of a file beside the page"
    browser.get(f"{server}/{entry}.html")
    browser.get_log("browser")  # drop what the previous page left
    browser.refresh()
    media = browser.execute_async_script(WAIT_FOR_MEDIA)
    errors = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE" and not ignorable(e, server)]
    assert not errors, f"{entry}: console errors: {[e['message'][:200] for e in errors]}"

    sources = media["sources"]
    folder = f"{server}/{entry}_media/"
    away = [src for src in sources if not (src.startswith(folder) and src.endswith((".mp3", ".wav")))]
    assert not away, f"{entry}: players whose sound is not a file in {entry}_media/: {away[:3]}"
    durations = media["durations"]
    bad = [d for d in durations if not (isinstance(d, (int, float)) and 0 < d < float("inf"))]
    assert not bad, f"{entry}: {len(bad)} of {len(durations)} audio players have no finite duration"
    broken = [src for src, width in media["images"] if not width]
    assert not broken, f"{entry}: images that did not load: {broken}"

    math = browser.execute_async_script(WAIT_FOR_MATH)  # MathJax is served with the book: no CDN needed
    if math["total"]:
        assert math["mathjax"], f"{entry}: {math['total']} equations but MathJax did not load"
        assert not math["untypeset"], f"{entry}: equations left as TeX: {math['untypeset'][:3]}"

    bold = browser.execute_script(   # a glued number or phrase reads as the text around it, not in bold
        "return Array.from(document.querySelectorAll('span.pasted-text'))"
        ".filter(e => getComputedStyle(e).fontWeight !== getComputedStyle(e.parentElement).fontWeight)"
        ".map(e => e.textContent.slice(0, 60));")
    assert not bold, f"{entry}: glued text drawn in another weight than its sentence: {bold[:3]}"

    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('a')).map(a => a.href)"
        ".filter(h => h.includes('colab.research.google.com'));")
    if entry in CHAPTER_ENTRIES:
        assert links, f"{entry}: no Colab button"
        assert set(links) == {expected_colab_url(entry)}, f"{entry}: Colab links {links}"
    else:
        assert not links, f"{entry} is not a notebook but has a Colab button"


def test_every_page_is_under_10_mb(book):
    """Pages people can open: no page (with what it embeds) over 10 MB; the media live beside it."""
    sizes = {str(p.relative_to(book.html)): p.stat().st_size for p in book.html.rglob("*.html")}
    assert sizes
    big = {k: f"{v / 2**20:.1f} MB" for k, v in sizes.items() if v >= MAX_PAGE_BYTES}
    assert not big, f"pages over 10 MB: {big}"


def test_players_and_images_become_files_beside_the_page(tmp_path):
    """book_build.externalize_media: wav players -> MP3 files, png data URIs -> files, one file per content."""
    import io

    import nbformat
    import numpy as np
    import soundfile as sf
    from IPython.display import Audio

    from flowsep import widgets

    x = 0.1 * np.sin(np.arange(22050) / 10)
    html_outputs = [widgets.audio_tag(x, 22050), Audio(x, rate=22050, normalize=False)._repr_html_(),
                    widgets.spectrogram_player(x, 22050).data, widgets.audio_tag(x, 22050)]
    cell = nbformat.v4.new_code_cell("", outputs=[
        nbformat.v4.new_output("display_data", data={"text/html": h, "text/plain": "<player>"})
        for h in html_outputs])
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert book_build.externalize_media(nb, tmp_path / "ch_media", "ch_media") == 5
    files = sorted(p.name for p in (tmp_path / "ch_media").iterdir())
    assert sorted(f[-4:] for f in files) == [".mp3", ".png"], files  # the same sound twice: one file
    for out in cell.outputs:
        text = out.data["text/html"]
        assert "data:" not in text and 'preload="metadata"' in text and 'src="ch_media/' in text
    assert 'type="audio/mpeg"' in cell.outputs[1].data["text/html"]  # IPython's <source type=...>
    mp3 = next(p for p in (tmp_path / "ch_media").iterdir() if p.suffix == ".mp3")
    data, rate = sf.read(io.BytesIO(mp3.read_bytes()))
    assert rate == 22050 and abs(len(data) - 22050) < 3000 and 0.05 < np.abs(data).max() < 0.15


# ---- what a reader sees: the book, not its machinery -------------------------------------------------
#: text that only a progress bar or a training log writes
LOG_TEXT = re.compile(r"\d+%\|[^|\n]*\||\d+(?:\.\d+)?(?:it|s)/(?:s|it)\]|^\[[A-Za-z][^\]\n]*\] ", re.M)


def _chapter_pages(book):
    from bs4 import BeautifulSoup

    for entry in sorted(CHAPTER_ENTRIES):
        page = book.html / f"{entry}.html"
        if page.is_file():
            yield entry, BeautifulSoup(page.read_text(), "html.parser")


def test_pages_show_no_machinery(book):
    """No Colab install cell, no parameter cells, no glue or assert lines in the code shown, and no text
    of progress bars or training logs in what the cells printed."""
    pages = list(_chapter_pages(book))
    assert pages
    for entry, soup in pages:
        for cell in soup.select("div.cell_input"):
            code = cell.get_text()
            assert "google.colab" not in code, f"{entry}: the Colab cell is on the page"
            assert not re.search(r"^\s*PROFILE\s*=", code, re.M), f"{entry}: a parameters cell is on the page"
            assert not re.search(r"^\s*(glue\(|assert\b)", code, re.M), f"{entry}: glue/assert on the page:\n{code}"
        for output in soup.select("div.cell_output"):
            found = LOG_TEXT.search(output.get_text())
            assert not found, f"{entry}: progress or log text on the page: {found.group(0)!r}"
        assert not soup.select(".flowsep-progress"), f"{entry}: a progress bar on the page"


def test_figures_fit_the_column_and_stay_small(book):
    """Every image of a chapter page is at most book_build.MAX_PNG_BYTES, and no wider than what keeps
    BOOK_STYLE's smallest text at plots.MIN_TEXT_PX once the image is scaled to the text column."""
    from PIL import Image

    from flowsep import book_build, plots
    widest = plots.widest_figure_px()
    checked = 0
    for entry, soup in _chapter_pages(book):
        page = book.html / f"{entry}.html"
        for img in soup.select("img"):
            src = img.get("src", "")
            if not src or src.startswith(("data:", "http")) or not src.endswith(".png"):
                continue
            path = (page.parent / src).resolve()
            assert path.is_file(), f"{entry}: {src} is missing"
            checked += 1
            size = path.stat().st_size
            assert size <= book_build.MAX_PNG_BYTES, f"{entry}: {src} is {size // 1024} KB"
            width = Image.open(path).size[0]
            assert width <= widest, (f"{entry}: {src} is {width} px wide: its text would read below "
                                     f"{plots.MIN_TEXT_PX:g} px in the {plots.COLUMN_PX} px column")
            alt = img.get("alt", "")
            assert alt.strip() and not re.search(r"\.png$|_images/", alt), f"{entry}: {src} has the alt text {alt!r}"
    assert checked


def test_every_table_has_a_caption(book):
    """Every data table of a chapter page (pandas' class="dataframe") says what it is in a caption."""
    tables = 0
    for entry, soup in _chapter_pages(book):
        for found in soup.select("table.dataframe"):
            tables += 1
            caption = found.find("caption")
            assert caption and caption.get_text(strip=True), \
                f"{entry}: a table without a caption:\n{found.get_text(' ', strip=True)[:300]}"
    assert tables
