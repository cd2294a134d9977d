"""The HTML diff report in a real browser (Playwright driving Debian's Chromium): it fits the
window without a horizontal scrollbar, and the divergence chart's axis labels do not overlap.

Two reports are opened at 1400 and 800 px: the one the service serves
(``/v1/profiles/diff?format=html``, real profiles of a scripted pool) and the same diff with
long model names and a lower bound of -0.01 (the axis case of the issue: ``-0.01`` was drawn
over ``0.00``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from profiles.diff import Diff
from profiles.report.html import render_html
from tests.e2e.harness import Running
from tests.e2e.ui_world import (
    CLIENT_KEY,
    api,
    browser_fixture,  # noqa: F401
    profiled_fixture,  # noqa: F401  # a fixture the tests use by name
    running_fixture,  # noqa: F401
)

WIDTHS = (1400, 800)

OVERFLOW = "() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]"
TICK_BOXES = """() => [...document.querySelectorAll('svg text[text-anchor="middle"]')].map(t => {
    const r = t.getBoundingClientRect();
    return {text: t.textContent, left: r.left, right: r.right, top: r.top, bottom: r.bottom};
})"""


def overlapping(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of labels whose boxes share some area."""
    out = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if (min(a["right"], b["right"]) > max(a["left"], b["left"])
                    and min(a["bottom"], b["bottom"]) > max(a["top"], b["top"])):
                out.append((a["text"], b["text"]))
    return out


async def check_layout(page: Page) -> None:
    """No horizontal overflow; at least three axis labels, 0 among them, none overlapping."""
    scroll_width, client_width = await page.evaluate(OVERFLOW)
    boxes = await page.evaluate(TICK_BOXES)
    labels = [b["text"] for b in boxes]
    assert len(labels) >= 3 and "+0.00" in labels, labels
    assert scroll_width <= client_width, (
        f"horizontal overflow: {scroll_width} px of content in {client_width} px")
    assert overlapping(boxes) == [], labels


def edge_case(diff: Diff) -> Diff:
    """The same diff with long model names and one domain's interval starting just below 0
    (-1 point: the label that was drawn over the 0 label)."""
    first = dataclasses.replace(diff.domains[0], shift=0.4, shift_low=-1.0, shift_high=2.0)
    def floor(low: float | None) -> float | None:  # a too-small domain has no interval
        return None if low is None else max(0.0, low)

    rest = [dataclasses.replace(d, shift_low=floor(d.shift_low)) for d in diff.domains[1:]]
    overall = dataclasses.replace(diff.overall, shift_low=floor(diff.overall.shift_low))
    return dataclasses.replace(diff, a="meta-llama-3.1-70b-instruct-q4",
                               b="mistral-small-3.2-24b-instruct-2506",
                               domains=[first, *rest], overall=overall)


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_report_fits_the_window_and_its_axis_labels_do_not_overlap(
        running: Running, browser: Browser, width: int) -> None:
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.set_extra_http_headers({"Authorization": f"Bearer {CLIENT_KEY}"})
    await page.goto(f"{running.url}/v1/profiles/diff?a=alpha&b=beta&format=html")
    assert "diff --behavior a/alpha b/beta" in await page.title()
    await check_layout(page)

    served = Diff.from_json(await api(running, "GET", "/v1/profiles/diff?a=alpha&b=beta"))
    await page.set_content(render_html(edge_case(served)))
    await check_layout(page)
    await page.close()
