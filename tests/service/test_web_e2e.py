"""End to end: the search page in headless Chromium against a real uvicorn server on loopback.

Needs Debian's ``chromium`` (``scripts/install-browser.sh`` installs it; ``make test`` runs that
first) and the ``playwright`` Python package (its own browsers are not used). Skips, saying
why, when either is missing. Saves a screenshot to ``artifacts/web_e2e.png`` (or
``$SPARSEARCH_ARTIFACTS``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.service.serving import running_server

CHROMIUM = os.environ.get("SPARSEARCH_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("SPARSEARCH_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts"))

DOCS = {
    "d1": ("Cats", "Cats are small domesticated carnivorous mammals that hunt mice."),
    "d2": ("Dogs", "Dogs are domesticated descendants of wolves and loyal companions."),
    "d3": ("Wolves", "The wolf is a large canine native to Eurasia and North America; wolves hunt in packs "
                     "and a pack of wolves can hunt large prey such as elk and deer."),
    "d4": ("Python", "Python is a programming language that emphasises readability."),
    "d5": ("Foxes", "Foxes are small canines; a fox hunts mice and rabbits at night."),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("uvicorn", reason="the server needs uvicorn (the 'service' extra)")
    from sparsearch.encoders import get_encoder
    from sparsearch.index import build_index
    from sparsearch.service import create_app

    root = tmp_path_factory.mktemp("web")
    for name, opts in (("bm25", {}), ("bm25-short", {"k1": 0.9, "b": 0.4})):
        enc = get_encoder("bm25", **opts)
        texts = [f"{t} {x}" for t, x in DOCS.values()]
        enc.fit(texts)
        build_index(enc.encode_documents(texts, list(DOCS)), root / name, encoder=enc, documents=DOCS)
    with running_server(create_app([root / "bm25", root / "bm25-short"])) as port:
        yield f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="module")
def browser():
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/install-browser.sh (Debian packages chromium, "
                    f"chromium-driver) or set SPARSEARCH_CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
    with sync_api.sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        except Exception as e:  # noqa: BLE001 - a broken browser install is a skip, not a failure
            pytest.skip(f"Chromium at {CHROMIUM} failed to start: {e}")
        yield b
        b.close()


def _open_page(browser, url: str):
    """``(page, errors)``: the search page loaded (the served indexes listed), and the script
    errors it raises from now on."""
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_function("document.getElementById('served').textContent.includes('docs')")
    return page, errors


def test_search_page_end_to_end(server, browser):
    page, errors = _open_page(browser, server)
    assert "bm25 (5 docs)" in page.inner_text("#served")
    assert page.locator("#indexes input[type=checkbox]").count() == 2

    page.fill("#q", "wolves hunt")
    page.press("#q", "Enter")
    page.wait_for_selector("article.hit")
    hits = page.locator("article.hit")
    assert hits.count() >= 2
    first = hits.nth(0)
    assert first.get_attribute("data-id") == "d3"
    assert "Wolves" in first.locator("h2").inner_text()
    # matched terms highlighted, shaded by contribution
    marks = first.locator("mark")
    assert marks.count() >= 2
    assert {m.lower() for m in marks.all_inner_texts()} >= {"wolves", "hunt"}
    # latency shown
    latency = page.inner_text("#latency")
    assert "server" in latency and "ms" in latency
    # expandable explanation: term, query weight, document weight, product
    table = first.locator("table.expl").first
    assert not table.is_visible()
    first.locator("details.explain summary").click()
    table.wait_for(state="visible")
    header = table.locator("thead").inner_text().lower()
    for col in ("term", "query weight", "doc weight", "product"):
        assert col in header
    terms = table.locator("tbody td:first-child").all_inner_texts()
    assert {"wolv", "hunt"} <= set(terms)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "web_e2e.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"\nscreenshot: {shot}")
    assert shot.stat().st_size > 10_000

    # an empty query is refused in the page; an over-long one is answered with the service's message
    page.fill("#q", "")
    page.press("#q", "Enter")
    assert "Type a query" in page.inner_text("#status")
    page.evaluate("document.getElementById('q').removeAttribute('maxlength')")
    page.fill("#q", "wolves " * 300)
    page.press("#q", "Enter")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Error')")
    assert "Error 422" in page.inner_text("#status") and "1000 characters" in page.inner_text("#status")
    assert not errors, errors
    page.close()


@pytest.fixture(scope="module")
def hybrid_server(tmp_path_factory):
    """A hybrid index of two BM25 variants (no model to load), served alone."""
    pytest.importorskip("uvicorn", reason="the server needs uvicorn (the 'service' extra)")
    from sparsearch.index.hybrid import build_hybrid, make_encoder
    from sparsearch.service import create_app

    path = tmp_path_factory.mktemp("webhyb") / "hyb"
    build_hybrid(path, [f"{t} {x}" for t, x in DOCS.values()], list(DOCS),
                 [("bm25", make_encoder("bm25")), ("robertson", make_encoder("bm25:robertson"))],
                 documents=[(i, t, x) for i, (t, x) in DOCS.items()])
    with running_server(create_app([path])) as port:
        yield f"http://127.0.0.1:{port}/"


def test_hybrid_hits_show_their_rank_in_each_representation(hybrid_server, browser):
    page, errors = _open_page(browser, hybrid_server)
    assert "hyb (5 docs: bm25 + robertson)" in page.inner_text("#served")
    assert page.locator("#hybrid-opt").is_visible()  # the hybrid fusion choice appears for a hybrid index
    page.select_option("#hfusion", "minmax")
    page.fill("#q", "wolves hunt")
    page.press("#q", "Enter")
    page.wait_for_selector("article.hit")
    first = page.locator("article.hit").nth(0)
    assert first.get_attribute("data-id") == "d3"
    badges = first.locator("ul.reps li").all_inner_texts()
    assert [b.split(" ")[0] for b in badges] == ["bm25", "robertson"] and all("#1" in b for b in badges)
    assert first.locator("ul.reps").get_attribute("aria-label") == "rank in each representation"
    info = page.inner_text("#hybrid-info")
    assert "fused by minmax" in info and "fusion" in info and "bm25" in info
    # Robertson's idf drops "hunt" (in 3 of 5 documents): the documents matching only it get a dash there
    missing = page.locator("ul.reps li.none").all_inner_texts()
    assert missing and all(m == "robertson –" for m in missing)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "web_e2e_hybrid.png"), full_page=True)
    assert not errors, errors
    page.close()


def test_browser_install_script_exists():
    script = Path(__file__).resolve().parents[2] / "scripts" / "install-browser.sh"
    assert script.exists() and os.access(script, os.X_OK)
    assert shutil.which("bash")
