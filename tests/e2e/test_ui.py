"""The dashboard in a real browser: Playwright driving Debian's Chromium against the real
service on a scripted pool with real profiles and the real pairing policy.

Each test opens a page and checks what a person would: the names and similarity values shown
are the API's, a live diff arrives without a reload, a pin saved with the admin key is what the
policy decides next, a wrong key is refused. Every page is screenshotted into the artifacts
dir (``DIFFROUTE_TEST_ARTIFACTS``, else ``ui-screenshots`` in pytest's base temporary dir).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Page

from router.pairing.decider import build_decider
from router.service.state import STATE
from tests.e2e.harness import Running, make_settings, serve
from tests.e2e.ui_world import (
    ADMIN_KEY,
    CLIENT_KEY,
    LYON,
    MODEL_NAMES,
    PARIS,
    QUESTION,
    api,
    audit,
    browser_fixture,  # noqa: F401
    profiled_fixture,  # noqa: F401  # a fixture the tests use by name
    running_fixture,  # noqa: F401
    ui_settings,
)


@pytest.fixture
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go: ``$DIFFROUTE_TEST_ARTIFACTS``, else ``ui-screenshots`` in the
    run's base temporary dir (pytest keeps the last three runs')."""
    default = tmp_path_factory.getbasetemp() / "ui-screenshots"
    where = Path(os.environ.get("DIFFROUTE_TEST_ARTIFACTS", default))
    where.mkdir(parents=True, exist_ok=True)
    return where


async def open_page(browser: Browser, running: Running, hash_: str, *,
                    key: str | None = CLIENT_KEY) -> Page:
    """A new tab on ``/ui/#…``, with the client key already given (as the dialog stores it)."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.errors = errors  # type: ignore[attr-defined]  # read by the tests
    if key is not None:
        await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{key}')")
    await page.goto(f"{running.url}/ui/#{hash_}")
    return page


async def ready(page: Page) -> None:
    await page.wait_for_selector("body[data-ready=true]", timeout=10_000)


async def shot(page: Page, artifacts: Path, name: str) -> None:
    await page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def _approx(text: str | None, value: float | None, tolerance: float = 0.005) -> bool:
    """``text`` is ``value`` rounded (to 2 decimals by default)."""
    if value is None:
        return text == "n/a"
    return text is not None and abs(float(text) - value) <= tolerance + 1e-9


# --- pool ------------------------------------------------------------------------------------


async def test_pool_page_shows_the_apis_models_and_similarities(
        running: Running, browser: Browser, artifacts: Path) -> None:
    pool = await api(running, "GET", "/v1/pool")
    sim = pool["similarity"]
    assert sim["models"] == MODEL_NAMES
    page = await open_page(browser, running, "/pool")
    await ready(page)
    cards = await page.locator(".card h3").all_inner_texts()
    assert cards == [m["name"] for m in pool["models"]]
    for model in pool["models"]:
        card = page.locator(f'.card[data-model="{model["name"]}"]')
        assert await card.locator(".status").inner_text() == model["status"]["state"]
        accuracy = await card.locator("dd.accuracy").inner_text()
        assert accuracy.endswith("%")
        assert _approx(accuracy[:-1], model["profile"]["accuracy"] * 100, 0.05)
        # the samples per probe the profile holds (an unfinished build: fewer than asked)
        coverage = await card.locator("dd.coverage").inner_text()
        held, asked = model["profile"]["samples_held"], model["profile"]["samples"]
        assert coverage.endswith(f"probes × {held} of {asked} asked)"), coverage
    graph_nodes = await page.locator("svg.graph .node").evaluate_all(
        "els => els.map(e => e.dataset.model)")
    assert sorted(graph_nodes) == sorted(MODEL_NAMES)
    families = await page.locator("svg.graph .family").evaluate_all(
        "els => els.map(e => e.dataset.family)")
    assert sorted(families) == sorted(pool["families"])
    await shot(page, artifacts, "pool")

    for domain in ("all", "geography"):
        await page.select_option("#domain", domain)
        await check_heatmap(page, sim, domain)
    assert "domain=geography" in page.url
    await page.click('svg.heatmap .cell[data-a="alpha"][data-b="beta"]')  # a cell opens its diff
    await page.wait_for_url("**/ui/#/diff?a=alpha&b=beta")
    await page.frame_locator("#diff-report").locator("h1").wait_for(timeout=10_000)
    assert page.errors == []  # type: ignore[attr-defined]


async def test_long_model_names_stay_inside_the_graph(browser: Browser, tmp_path: Path) -> None:
    long = [f"org-{k}/a-very-long-model-name-instruct-v2.5-q4_k_m" for k in range(3)]
    models = [{"name": n, "backend": {"kind": "scripted", "seed": k}} for k, n in enumerate(long)]
    async with serve(make_settings(tmp_path, models)) as service:
        page = await open_page(browser, service, "/pool", key=None)
        await ready(page)
        outside = await page.locator("svg.graph .node text").evaluate_all(
            "els => els.filter(t => { const b = t.ownerSVGElement.getBoundingClientRect(),"
            " r = t.getBoundingClientRect(); return r.left < b.left || r.right > b.right; })"
            ".map(t => t.textContent)")
        assert outside == []  # cut to fit, not cut off by the drawing's edge
        titles = await page.locator("svg.graph .node > title").all_text_contents()
        assert all(any(t.startswith(n) for t in titles) for n in long)  # in full on hover


@pytest.mark.parametrize("view", ["/pool", "/diff", "/pairings", "/live"])
async def test_a_phone_sees_the_whole_page_width(running: Running, browser: Browser,
                                                 view: str) -> None:
    await audit(running, "beta")
    page = await open_page(browser, running, view)
    await page.set_viewport_size({"width": 390, "height": 844})
    await ready(page)
    # nothing (the header's "forget keys" among it) is off to the side of a phone's screen
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert (await page.locator("#forget-keys").bounding_box() or {"x": 1e9})["x"] < 390


async def test_a_heatmap_cell_opens_its_diff_from_the_keyboard(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/pool")
    await ready(page)
    cell = page.locator('svg.heatmap .cell[data-a="alpha"][data-b="beta"]')
    await cell.focus()
    assert await cell.evaluate("e => e === document.activeElement")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/ui/#/diff?a=alpha&b=beta")


async def check_heatmap(page: Page, sim: dict[str, Any], domain: str) -> None:
    """Every cell of the heatmap and every edge of the graph is the API's κp (and interval)."""
    n = len(sim["models"])
    matrix = sim["domains"][domain]
    cells = await page.locator("svg.heatmap .cell").evaluate_all(
        "els => els.map(e => [e.dataset.a, e.dataset.b, e.dataset.value, e.dataset.low,"
        " e.dataset.high, e.querySelector('text').textContent,"
        " e.querySelector('title').textContent])")
    assert len(cells) == n * n
    for a, b, value, low, high, shown, title in cells:
        k = sim["models"].index(a) * n + sim["models"].index(b)
        expected = matrix["kappa"][k]
        assert (float(value) if value else None) == expected, (domain, a, b)
        assert _approx(shown, expected), (domain, a, b, shown, expected)
        if matrix["kappa_low"][k] is not None:
            assert float(low) == matrix["kappa_low"][k] and float(high) == matrix["kappa_high"][k]
            found = re.search(r"\[(-?[\d.]+), (-?[\d.]+)\] 95% bootstrap interval", title)
            assert found is not None, title
            assert _approx(found[1], matrix["kappa_low"][k], 0.0005)
            assert _approx(found[2], matrix["kappa_high"][k], 0.0005)
    edges = await page.locator("svg.graph .edge").evaluate_all(
        "els => els.map(e => [e.dataset.a, e.dataset.b, Number(e.dataset.value)])")
    for a, b, value in edges:
        assert value == matrix["kappa"][sim["models"].index(a) * n + sim["models"].index(b)]
    shown_edges = {(a, b) for a, b, _ in edges}
    expected_edges = {(sim["models"][i], sim["models"][j]) for i in range(n)
                      for j in range(i + 1, n) if matrix["kappa"][i * n + j] is not None}
    assert shown_edges == expected_edges


# --- diff ------------------------------------------------------------------------------------


async def test_diff_page_renders_the_report_and_is_linkable(
        running: Running, browser: Browser, artifacts: Path) -> None:
    diff = await api(running, "GET", "/v1/profiles/diff?a=alpha&b=beta")
    assert diff["suite"] == "smoke"  # the profiles the pool view shows (policy.suite)
    page = await open_page(browser, running, "/diff?a=alpha&b=beta")
    await ready(page)
    frame = page.frame_locator("#diff-report")
    await frame.locator("h1").wait_for(timeout=10_000)
    assert await frame.locator("h1").inner_text() == "diff --behavior a/alpha b/beta"
    rows = await frame.locator("table.summary tbody tr td:first-child").all_inner_texts()
    assert set(rows) == {d["name"] for d in diff["domains"]} | {"all"}
    assert await frame.locator("section.hunk").count() == len(diff["hunks"])
    assert await page.locator("#diff-a").input_value() == "alpha"
    assert await page.locator("#diff-b").input_value() == "beta"
    await shot(page, artifacts, "diff")
    await page.select_option("#diff-b", "gamma")  # the choice goes into the URL
    await page.wait_for_url("**/ui/#/diff?a=alpha&b=gamma")
    await page.frame_locator("#diff-report").locator(
        "h1", has_text="b/gamma").wait_for(timeout=10_000)
    assert page.errors == []  # type: ignore[attr-defined]


# --- pairings --------------------------------------------------------------------------------


async def test_pin_set_with_the_admin_key_reaches_the_policy(
        running: Running, browser: Browser, artifacts: Path) -> None:
    route = {"role": "audit", "primary": "alpha", "task": QUESTION}
    before = await api(running, "POST", "/v1/route", route)
    pin = "beta" if before["partner"] != "beta" else "gamma"  # not what the policy chose
    current = await api(running, "GET", "/v1/pairings/current")
    page = await open_page(browser, running, "/pairings")
    await ready(page)
    row = page.locator('#pairings-table tr[data-primary="alpha"][data-role="audit"]')
    assert await row.locator("td.partner").inner_text() == before["partner"]
    shown = await page.locator("#pairings-table tbody tr").count()
    assert shown == len(current["data"]) == 2 * len(MODEL_NAMES)
    await shot(page, artifacts, "pairings")

    await row.locator("select.pin").select_option(pin)
    await page.click("#save-pairings")
    # a wrong admin key is refused and asked again; the right one is accepted
    await page.wait_for_selector("#key-dialog[open]")
    assert await page.locator("#key-title").inner_text() == "Admin key"
    for wrong in (CLIENT_KEY, "not-the-admin-key"):  # a client key (403), a wrong one (401)
        await page.fill("#key-input", wrong)
        await page.click("#key-submit")
        await page.wait_for_selector("#key-dialog[open]")
        assert "refused" in await page.locator("#key-why").inner_text()
    assert (await api(running, "GET", "/v1/pairings"))["pinned"] == {}
    await page.fill("#key-input", ADMIN_KEY)
    await page.click("#key-submit")
    await page.wait_for_selector("#pairings-status:has-text('saved')")

    assert (await api(running, "GET", "/v1/pairings"))["pinned"] == {"alpha": {"audit": pin}}
    after = await api(running, "POST", "/v1/route", route)
    assert after["partner"] == pin and "pinned" in after["reason"]
    row = page.locator('#pairings-table tr[data-primary="alpha"][data-role="audit"]')
    assert await row.locator("td.partner").inner_text() == pin
    assert await row.locator("select.pin").input_value() == pin
    # the next paired call is audited by the pinned partner
    answer = await api(running, "POST", "/v1/chat/completions",
                       {"model": "audit:alpha", "messages": [{"role": "user", "content": "hi"}]})
    assert answer["diffroute"]["partner"] == pin
    # the only errors are the refused saves, which the browser logs as failed loads
    assert all(re.search(r"status of 40[13]", e) for e in page.errors)  # type: ignore[attr-defined]


async def test_saving_pairings_where_no_admin_key_is_configured_says_so_without_asking(
        profiled: Path, tmp_path: Path, browser: Browser) -> None:
    """No admin key configured: no key can help, so the page shows the service's reason (a
    403 ``admin_key_not_configured``) instead of asking for a key three times."""
    shutil.copytree(profiled / "data", tmp_path / "data")
    settings = ui_settings(tmp_path)
    settings = settings.model_copy(
        update={"server": settings.server.model_copy(update={"admin_key": None})})
    async with serve(settings, decider_factory=build_decider) as running:
        page = await open_page(browser, running, "/pairings")
        await ready(page)
        row = page.locator('#pairings-table tr[data-primary="alpha"][data-role="audit"]')
        await row.locator("select.pin").select_option("beta")
        await page.click("#save-pairings")
        await page.wait_for_selector("#pairings-status:has-text('none is configured')")
        assert not await page.locator("#key-dialog[open]").count()
        assert (await api(running, "GET", "/v1/pairings"))["pinned"] == {}


# --- live ------------------------------------------------------------------------------------


async def test_live_feed_receives_an_audit_within_two_seconds(
        running: Running, browser: Browser, artifacts: Path) -> None:
    earlier = [await audit(running, "beta"), await audit(running, "gamma")]
    assert earlier[0]["flagged"] and not earlier[1]["flagged"]
    page = await open_page(browser, running, "/live")
    await ready(page)
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    assert await page.locator("li.diff").count() == 1
    charts = await page.locator("figure.chart").evaluate_all(
        "els => els.map(e => [e.dataset.pair, e.dataset.domain])")
    series = await api(running, "GET", "/v1/stats/disagreements/series?window=3600&buckets=30")
    assert sorted(map(tuple, charts)) == sorted(
        (f"{r['primary']},{r['partner']}", r["domain"]) for r in series["data"])
    # one bucket so far: its Wilson interval is a whisker (a band needs two buckets)
    assert await page.locator("figure.chart .band").count() == 0
    assert await page.locator("figure.chart line.whisker").count() == sum(
        len(r["points"]) for r in series["data"])
    assert await page.locator("figure.chart line.predicted").count() == sum(
        r["predicted_rate"] is not None for r in series["data"])

    started = asyncio.get_running_loop().time()
    fresh = await audit(running, "beta")
    assert fresh["flagged"]
    item = page.locator(f"#diff-{fresh['live_diff_id']}")
    await item.wait_for(timeout=2_000)
    assert asyncio.get_running_loop().time() - started < 2.0
    assert await page.locator("li.diff").count() == 2  # no reload: the first one is still there
    assert (await page.locator("li.diff").first.get_attribute("id")) == \
        f"diff-{fresh['live_diff_id']}"
    assert "alpha ⟷ beta" in await item.locator("header").inner_text()
    assert await item.locator(".role").inner_text() == "audit"
    assert await item.locator(".primary-text").inner_text() == PARIS
    assert await item.locator(".partner-text").inner_text() == LYON
    # what differs is highlighted, what is shared is not
    assert await item.locator(".primary-text mark.del").all_inner_texts() == ["Paris"]
    assert await item.locator(".partner-text mark.ins").all_inner_texts() == ["Lyon,", "I",
                                                                             "believe,"]
    assert page.errors == []  # type: ignore[attr-defined]
    await shot(page, artifacts, "live")


async def test_live_feed_pages_instead_of_loading_everything(
        running: Running, browser: Browser) -> None:
    ids = [(await audit(running, "beta"))["live_diff_id"] for _ in range(30)]
    page = await open_page(browser, running, "/live")
    await ready(page)
    assert await page.locator("li.diff").count() == 25  # one page, newest first
    assert await page.locator("li.diff").first.get_attribute("data-id") == ids[-1]
    await page.click("#older")
    await page.locator("li.diff").nth(29).wait_for()  # (the page's CSP forbids eval: no
    # wait_for_function)
    shown = await page.locator("li.diff").evaluate_all("els => els.map(e => e.dataset.id)")
    assert shown == ids[::-1]
    assert await page.locator("#older").is_hidden()


async def test_a_page_left_open_keeps_a_bounded_feed_and_pages_to_what_it_dropped(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/live")
    await ready(page)
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    ids = [(await audit(running, "beta"))["live_diff_id"] for _ in range(230)]
    await page.locator(f"#diff-{ids[-1]}").wait_for(timeout=5_000)
    shown = await page.locator("li.diff").evaluate_all("els => els.map(e => e.dataset.id)")
    assert shown == ids[::-1][:200]  # the newest 200, not every diff since the page opened
    await page.click("#older")
    await page.locator("li.diff").nth(224).wait_for()
    shown = await page.locator("li.diff").evaluate_all("els => els.map(e => e.dataset.id)")
    assert shown == ids[::-1][:225]  # the next page is the ones dropped, none skipped
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_diff_of_another_day_shows_its_date(running: Running, browser: Browser) -> None:
    await audit(running, "beta")
    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    # three days later on the reader's clock (the timers keep running)
    later = datetime.now() + timedelta(days=3)
    await page.clock.set_fixed_time(later)
    await page.goto(f"{running.url}/ui/#/live?window=604800")
    await ready(page)
    shown = await page.locator("li.diff header .muted").first.inner_text()
    that_day = await page.evaluate("new Date(Date.now() - 3 * 86400000).toLocaleDateString()")
    assert shown.startswith(that_day), shown  # not the time of day alone: it was not today


async def test_drift_alarms_stand_out(running: Running, browser: Browser,
                                      artifacts: Path) -> None:
    page = await open_page(browser, running, "/live")
    await ready(page)
    assert await page.locator("#drift.ok-banner").count() == 1  # nothing compared yet
    await page.close()
    # the profile predicts alpha and beta disagree about half the time; live, they always do
    for _ in range(40):
        await audit(running, "beta")

    async def drifted() -> list[tuple[str, str]]:
        drift = await api(running, "GET", "/v1/drift")
        return [(s["primary"], s["partner"]) for s in drift["states"] if s["state"] == "drifted"]

    # the drift monitor follows the store: the last comparisons reach it a moment later
    async with asyncio.timeout(5):
        while not await drifted():  # noqa: ASYNC110  # polls the HTTP API
            await asyncio.sleep(0.02)
    assert await drifted() == [("alpha", "beta")]
    page = await open_page(browser, running, "/live")
    await ready(page)
    alarm = page.locator("#drift.alarm")
    assert await alarm.get_attribute("role") == "alert"
    assert "1 pair drifted" in await alarm.locator("h2").inner_text()
    assert "alpha ⟷ beta" in await alarm.locator("li.drifted").inner_text()
    assert await page.locator('figure.chart.drifted[data-pair="alpha,beta"]').count() == 1
    colour = await alarm.evaluate("e => getComputedStyle(e).borderTopColor")
    assert colour == "rgb(207, 34, 46)"  # red: it stands out
    await shot(page, artifacts, "live-drift")


async def test_a_drift_alarm_reaches_an_open_page_without_a_reload(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/live")
    await ready(page)
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    assert await page.locator("#drift.ok-banner").count() == 1
    for _ in range(40):  # alpha and beta always disagree: the pair drifts (as above)
        await audit(running, "beta")
    # the banner follows, as the charts do: no "No drift" under a drifted chart
    await page.locator("#drift.alarm").wait_for(timeout=5_000)
    assert "alpha ⟷ beta" in await page.locator("#drift li.drifted").inner_text()
    await page.locator('figure.chart.drifted[data-pair="alpha,beta"]').wait_for(timeout=5_000)
    assert await page.locator("#drift.ok-banner").count() == 0
    assert page.errors == []  # type: ignore[attr-defined]


# --- auth ------------------------------------------------------------------------------------


async def test_the_page_asks_for_the_key_and_refuses_a_wrong_one(
        running: Running, browser: Browser, artifacts: Path) -> None:
    async with aiohttp.ClientSession() as http, http.get(running.url + "/ui/") as resp:
        assert resp.status == 200 and "text/html" in resp.headers["Content-Type"]
    page = await open_page(browser, running, "/pool", key=None)
    await page.wait_for_selector("#key-dialog[open]")
    assert await page.locator("#key-title").inner_text() == "API key"
    await page.fill("#key-input", "wrong-key")
    await page.click("#key-submit")
    await page.wait_for_selector("#key-dialog[open]")
    assert "refused" in await page.locator("#key-why").inner_text()
    await shot(page, artifacts, "key")
    assert await page.locator(".card").count() == 0  # nothing shown without the key
    await page.fill("#key-input", CLIENT_KEY)
    await page.click("#key-submit")
    await ready(page)
    assert await page.locator(".card").count() == len(MODEL_NAMES)
    stored = await page.evaluate("sessionStorage.getItem('diffroute.key')")
    assert stored == CLIENT_KEY


# --- found by a sweep of the dashboard ---------------------------------------------------------


async def test_escape_on_the_key_dialog_is_a_cancel_not_a_dead_page(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/pool", key=None)
    await page.wait_for_selector("#key-dialog[open]")
    await page.keyboard.press("Escape")
    await page.wait_for_selector("#key-dialog", state="hidden")
    await page.locator(".error").first.wait_for(timeout=5_000)  # said, not a blank page
    await page.goto(f"{running.url}/ui/#/live")  # the next view asks again
    await page.wait_for_selector("#key-dialog[open]", timeout=5_000)
    await page.fill("#key-input", CLIENT_KEY)
    await page.click("#key-submit")
    await ready(page)


async def test_a_diff_recorded_before_the_stream_connects_reaches_an_empty_feed(
        running: Running, browser: Browser) -> None:
    """The feed is read empty; a diff is recorded; only then does the stream connect."""
    recorded: list[str] = []

    async def late(route: Any) -> None:
        recorded.append((await audit(running, "beta"))["live_diff_id"])
        await route.continue_()

    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.route("**/v1/diffs/stream*", late)
    await page.goto(f"{running.url}/ui/#/live")
    await page.locator(f"#diff-{(await _first(recorded))}").wait_for(timeout=5_000)
    assert await page.locator("li.diff").count() == 1


async def _first(items: list[str]) -> str:
    async with asyncio.timeout(10):
        while not items:  # noqa: ASYNC110  # filled by the route handler
            await asyncio.sleep(0.02)
    return items[0]


async def test_the_window_keeps_the_filters_and_each_filter_can_be_cleared(
        running: Running, browser: Browser) -> None:
    await audit(running, "beta")
    page = await open_page(browser, running, "/live?pair=alpha,beta&domain=geography")
    await ready(page)
    assert "geography" in await page.locator("#filter-domain").inner_text()
    await page.select_option("#window", "21600")
    await page.wait_for_url(re.compile(r".*window=21600.*"))
    assert "pair=alpha%2Cbeta" in page.url and "domain=geography" in page.url
    await page.locator("#filter-domain a").click()
    await page.wait_for_url(re.compile(r"^(?!.*domain=).*pair=alpha%2Cbeta.*$"))
    assert page.errors == []  # type: ignore[attr-defined]


async def test_long_answers_are_still_diffed_word_by_word(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/pool")
    await ready(page)
    a = " ".join(f"w{i}" for i in range(300))
    b = " ".join(f"w{i}" if i % 3 else f"x{i}" for i in range(300))
    marks = await page.evaluate(
        """async ([a, b]) => {
             const { wordDiff } = await import('/ui/live.js');
             const [left, right] = wordDiff(a, b);
             return [left.filter(([, c]) => c).length, right.filter(([, c]) => c).length,
                     left.map(([t]) => t).join('') === a, right.map(([t]) => t).join('') === b];
           }""", [a, b])
    assert marks == [100, 100, True, True]
    huge = await page.evaluate(
        """async ([a, b]) => {
             const { wordDiff } = await import('/ui/live.js');
             const [left] = wordDiff('same start ' + a + ' same end',
                                     'same start ' + b + b + ' same end');
             return [left.slice(0, 2).some(([, c]) => c), left.some(([, c]) => c)];
           }""", [a, b])
    assert huge == [False, True]  # too long to align: the middle is marked, the ends are not


async def test_bidirectional_controls_in_an_answer_are_spelled_out(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/pool")
    await ready(page)
    shown = await page.evaluate(
        "async (t) => (await import('/ui/live.js')).revealBidi(t)", "a\u202egnp.exe")
    assert shown == "a⟨U+202E⟩gnp.exe"


async def test_leaving_the_live_page_before_it_loads_leaves_no_stream_open(
        running: Running, browser: Browser) -> None:
    """Live → Pool 5 ms later, three times: the live page that finished loading after the
    Pool page had started kept its stream (and its refresh timer) running behind it."""
    page = await open_page(browser, running, "/pool")
    await ready(page)
    for _ in range(3):
        await page.evaluate("location.hash = '#/live'")
        await page.wait_for_timeout(5)
        await page.evaluate("location.hash = '#/pool'")
    await ready(page)
    broadcaster = running.app[STATE].live.broadcaster
    await page.wait_for_timeout(1500)  # what the live pages started has had time to connect
    async with asyncio.timeout(5):
        while broadcaster.listening:  # noqa: ASYNC110  # the server's own subscriber set
            await asyncio.sleep(0.05)
    assert await page.evaluate("document.body.dataset.page") == "pool"
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a_diff_missing_a_field_is_an_error_in_its_place_not_the_whole_page(
        running: Running, browser: Browser) -> None:
    ids = [(await audit(running, "beta"))["live_diff_id"] for _ in range(2)]

    async def without_domains(route: Any) -> None:  # as an older or a proxying server might
        response = await route.fetch()
        body = await response.json()
        del body["data"][0]["domains"]
        await route.fulfill(response=response, json=body)

    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.route("**/v1/diffs?*", without_domains)
    await page.goto(f"{running.url}/ui/#/live")
    await ready(page)
    assert await page.locator("li.diff.error").count() == 1
    assert ids[-1] in await page.locator("li.diff.error").inner_text()
    assert await page.locator(f"#diff-{ids[0]}").count() == 1  # the other one is shown
    assert await page.locator("#drift").count() == 1  # and so is the rest of the page


async def test_the_stream_pill_leaves_live_as_soon_as_the_server_ends_the_stream(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/live")
    await ready(page)
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    running.app[STATE].live.broadcaster.close()  # what a shutdown does to every stream
    # the page reconnects 1 s later: before that, it must not say "live"
    await page.wait_for_selector("#stream-state[data-state=reconnecting]", timeout=500)


async def test_a_stream_whose_key_dialog_was_cancelled_resumes_once_a_key_is_given(
        running: Running, browser: Browser) -> None:
    page = await open_page(browser, running, "/live")
    await ready(page)
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    # the key stops working (revoked, or the service restarted with others); the stream ends
    await page.evaluate("sessionStorage.setItem('diffroute.key', 'revoked-key')")
    running.app[STATE].live.broadcaster.close()
    await page.wait_for_selector("#key-dialog[open]", timeout=5_000)
    await page.keyboard.press("Escape")
    # not "reconnecting": it will not, without a key
    await page.wait_for_selector('#stream-state[data-state="no key"]', timeout=2_000)
    # a key given later (to any of the page's dialogs, which keep it for the tab) revives it
    await page.evaluate(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.wait_for_selector("#stream-state[data-state=connected]", timeout=5_000)
    fresh = await audit(running, "beta")
    await page.locator(f"#diff-{fresh['live_diff_id']}").wait_for(timeout=2_000)


async def test_a_service_that_does_not_answer_is_said_so(running: Running,
                                                        browser: Browser) -> None:
    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.route("**/v1/pool", lambda route: route.abort("connectionrefused"))
    await page.goto(f"{running.url}/ui/#/pool")
    await ready(page)
    text = await page.locator("main .error").inner_text()
    assert "the service does not answer" in text, text  # not fetch's bare "Failed to fetch"


async def test_a_drifted_pair_shows_its_alarm_behind_twenty_newer_ones(
        running: Running, browser: Browser) -> None:
    # alpha/beta drifted after 12 comparisons; 24 alarms of another pair followed
    def event(seq: int, partner: str, comparisons: int) -> dict[str, Any]:
        return {"seq": seq, "at": 1.0e9 + seq, "primary_model": "alpha", "partner": partner,
                "domain": "general", "direction": "up", "expected": 0.1, "observed": 0.9,
                "comparisons": comparisons, "statistic": 10.3}
    events = [event(1, "beta", 12)] + [event(k, "gamma", 30) for k in range(2, 26)]
    state = {"primary": "alpha", "partner": "beta", "domain": "general", "state": "drifted",
             "comparisons": 4000, "expected_rate": None, "statistic": 0.0}

    async def drift(route: Any) -> None:  # as the API: the newest `limit` events
        limit = int(re.search(r"limit=(\d+)", route.request.url)[1])  # type: ignore[index]
        await route.fulfill(json={"object": "list", "data": events[-limit:],
                                  "states": [state]})

    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.route("**/v1/drift?*", drift)
    await page.goto(f"{running.url}/ui/#/live")
    await ready(page)
    text = await page.locator("#drift li.drifted").inner_text()
    # its alarm, not "drifted after 4000 comparisons" (all it has compared since)
    assert "observed over 12 comparisons" in text and "4000" not in text, text


async def test_a_drift_alarm_does_not_call_a_relearned_rate_the_profiles(
        running: Running, browser: Browser) -> None:
    # alpha/beta drifted once, relearned 1 %, then drifted again: the second alarm's expected
    # rate is the relearned one, and the pair is no longer relearning
    event = {"seq": 2, "at": 1.0e9, "primary_model": "alpha", "partner": "beta",
             "domain": "general", "direction": "up", "expected": 0.01, "observed": 1.0,
             "comparisons": 12, "statistic": 10.3}
    state = {"primary": "alpha", "partner": "beta", "domain": "general", "state": "drifted",
             "comparisons": 4000, "expected_rate": 0.0098, "statistic": 0.0}

    async def drift(route: Any) -> None:
        await route.fulfill(json={"object": "list", "data": [event], "states": [state]})

    page = await browser.new_page()
    await page.add_init_script(f"sessionStorage.setItem('diffroute.key', '{CLIENT_KEY}')")
    await page.route("**/v1/drift?*", drift)
    await page.goto(f"{running.url}/ui/#/live")
    await ready(page)
    text = await page.locator("#drift li.drifted").inner_text()
    assert "profile" not in text and "where 1.0% was expected" in text, text
    assert "relearning" not in text and "relearned since: 1.0%" in text, text
