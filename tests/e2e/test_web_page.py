"""The web page as a shopper uses it, in headless Chromium: text, photo upload, "similar", a facet.

Debian's chromium (`make browser`) driven by Playwright with ``executable_path``: Playwright's own
browser download cannot run here (only the package registries are reachable). Screenshots of each
step go to var/test-artifacts/web/.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "var" / "test-artifacts" / "web"
CHROMIUM = Path(os.environ.get("PRISM_CHROMIUM", "/usr/bin/chromium"))
# Generous for a 2-core machine shared with other work; every wait ends as soon as its condition holds.
WAIT_MS = 45_000
SCORE = re.compile(r"^-?\d+\.\d{3} · \w+$")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Fail, never skip: `make test` installs both (make browser, the dev extras), so a missing one
    # is a broken setup that a skip would hide.
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: run `make browser` (as root: apt-get install chromium), "
            "or point PRISM_CHROMIUM at a Chromium binary"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - a broken install, reported as such
        pytest.fail(f"playwright is not installed ({exc}): run `make install` (the dev extras pin it)")
    with sync_playwright() as pw:
        # Playwright starts Chromium without its sandbox unless asked (CI runs as root, where it would refuse)
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield b
        b.close()


def _photo_query(shared_data: Path, slice_ids: set[str]) -> tuple[Path, str]:
    """The first customer-style photo (myntra-photos/) whose product is in the ingested slice."""
    with (shared_data / "catalogs" / "myntra-queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            image = q.get("image", "")
            if not image.startswith("myntra-photos/"):
                continue
            exact = [pid for pid, grade in q["relevant"].items() if grade == 2 and pid in slice_ids]
            if exact:
                return shared_data / "catalogs" / image, exact[0]
    raise AssertionError("no myntra-photos query targets a product of the slice")


def _cards(page: Page) -> list[dict[str, Any]]:
    return page.eval_on_selector_all(
        "#grid .card",
        """cards => cards.map(c => ({
            id: c.dataset.id,
            title: c.querySelector('.t').textContent.trim(),
            score: c.querySelector('.score').textContent.trim(),
            img: c.querySelector('img') ? c.querySelector('img').getAttribute('src') : null,
        }))""",
    )


def _check_grid(page: Page, api: httpx.Client, k: int = 40) -> list[dict[str, Any]]:
    """Cards with a product photo that loaded, the product's own title and a score; returns them."""
    cards = _cards(page)
    assert 0 < len(cards) <= k
    assert len({c["id"] for c in cards}) == len(cards), "one card per product"
    for c in cards:
        assert c["title"] and SCORE.match(c["score"]), c
        assert c["img"] == f"/v1/products/{c['id']}/images/0", c
    # the first row is on screen (lazy loading leaves the rest for scrolling): those photos decoded
    page.wait_for_function(
        """() => [...document.querySelectorAll('#grid .card img')].slice(0, 4)
                 .every(i => i.complete && i.naturalWidth > 0)""",
        timeout=WAIT_MS,
    )
    scores = [float(c["score"].split(" ")[0]) for c in cards]
    assert scores == sorted(scores, reverse=True)
    first = api.get(f"/v1/products/{cards[0]['id']}").json()
    assert cards[0]["title"] == first["title"]
    return cards


def test_web_page_text_photo_similar_and_facet(
    indexed_suite: Any, myntra_slice: Path, shared_data: Path, browser: Browser
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = indexed_suite.url
    slice_ids = {json.loads(line)["id"] for line in (myntra_slice / "products.jsonl").read_text().splitlines()}
    photo, photo_product = _photo_query(shared_data, slice_ids)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    foreign: list[str] = []
    problems: list[str] = []
    page.on("request", lambda r: None if r.url.startswith((base, "blob:", "data:")) else foreign.append(r.url))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)
    page.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
    status = page.locator("#status")
    with httpx.Client(base_url=base, timeout=60) as api:
        try:
            page.goto(base + "/")
            expect(page.locator("#q")).to_be_visible()

            # 1. a typed query
            page.fill("#q", "blue t-shirt for men")
            page.press("#q", "Enter")
            expect(status).to_contain_text('results for "blue t-shirt for men"', timeout=WAIT_MS)
            text_cards = _check_grid(page, api)
            expect(page.locator('#facets [data-facet="colour"]').first).to_be_visible()
            page.screenshot(path=str(ARTIFACTS / "1-text.png"), full_page=True)

            # 2. a customer's photo through the file input (the drop zone's input)
            page.set_input_files("#file", str(photo))
            expect(status).to_contain_text("results for your photo", timeout=WAIT_MS)
            expect(page.locator("#status img")).to_be_visible()  # the query photo is shown beside the count
            photo_cards = _check_grid(page, api)
            assert photo_product in [c["id"] for c in photo_cards], f"{photo.name}: {photo_product} not in the grid"
            assert [c["id"] for c in photo_cards] != [c["id"] for c in text_cards]
            page.screenshot(path=str(ARTIFACTS / "2-photo.png"), full_page=True)

            # 3. "similar" on a result
            seed = photo_cards[0]
            page.locator(f'#grid .card[data-id="{seed["id"]}"] button.similar').click()
            expect(status).to_contain_text(f'products like "{seed["title"]}"', timeout=WAIT_MS)
            similar_cards = _check_grid(page, api)
            assert seed["id"] not in {c["id"] for c in similar_cards}, "a product is not similar to itself"
            page.screenshot(path=str(ARTIFACTS / "3-similar.png"), full_page=True)

            # 4. a facet value narrows the same "similar" query (filters travel with every query kind)
            facet = page.locator('#facets [data-facet="colour"]').first
            colour = facet.get_attribute("data-value")
            assert colour
            facet.click()
            expect(page.locator('#facets [data-facet="colour"][aria-pressed="true"]')).to_have_attribute(
                "data-value", colour, timeout=WAIT_MS
            )
            expect(page.locator("#active")).to_contain_text(f"colour: {colour}", timeout=WAIT_MS)
            expect(status).to_contain_text(f'products like "{seed["title"]}"', timeout=WAIT_MS)
            filtered = _check_grid(page, api)
            for c in filtered:
                assert api.get(f"/v1/products/{c['id']}").json()["attributes"]["colour"] == colour, c
            page.screenshot(path=str(ARTIFACTS / "4-facet.png"), full_page=True)

            # 5. removing the filter chip gives the unfiltered "similar" grid back
            page.locator("#active button").click()
            expect(page.locator("#active button")).to_have_count(0, timeout=WAIT_MS)
            expect(page.locator('#facets [aria-pressed="true"]')).to_have_count(0, timeout=WAIT_MS)
            # the same size as before the filter; not the same order: a reranker past its time budget
            # is skipped (the gateway degrades), which may reorder the head between two calls
            assert len(_check_grid(page, api)) == len(similar_cards)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "failure.png"), full_page=True)
            raise
        finally:
            context.close()
    assert not foreign, f"the page fetched from outside the gateway: {foreign}"
    assert not problems, problems
