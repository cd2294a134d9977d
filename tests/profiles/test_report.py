"""Text, HTML and JSON reports of real diffs computed on a simulated pool with a planted shift."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from profiles.collect import Decoding
from profiles.diff import Diff, compute_diff
from profiles.matrix import pool_matrix
from profiles.profile import Profile
from profiles.report import (
    render_html,
    render_json,
    render_matrix_json,
    render_matrix_text,
    render_text,
)
from profiles.report.text import kappa_bar
from profiles.store import ObservationStore
from profiles.suite import Suite
from router.testing.simulate import profile_models, scripted_model, simulated_suite

ANSI = re.compile(r"\x1b\[[0-9;]*m")
PLANTED = "law"


@dataclasses.dataclass
class Pool:
    suite: Suite
    alpha: Profile
    beta: Profile  # alpha's family, another prior in the planted domain
    twin: Profile  # alpha's behaviour, another seed: a null pair


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Pool:
    suite = simulated_suite(["history", PLANTED, "math"], 16)
    models = [
        scripted_model("alpha", prior="p1", seed=1),
        scripted_model("beta", prior="p1", seed=2, domains={PLANTED: {"prior": "other"}}),
        scripted_model("twin", prior="p1", seed=3),
    ]
    with ObservationStore.in_data_dir(tmp_path_factory.mktemp("store")) as store:
        alpha, beta, twin = asyncio.run(profile_models(models, suite, store, Decoding(samples=12)))
    return Pool(suite, alpha, beta, twin)


@pytest.fixture(scope="module")
def planted(pool: Pool) -> Diff:
    return compute_diff(pool.alpha, pool.beta, pool.suite, n_permutations=500, n_resamples=500)


def test_planted_domain_is_flagged_and_ranked_first_with_its_marker(planted: Diff) -> None:
    assert planted.flagged_domains == [PLANTED]  # the simulation planted it; check the premise
    text = render_text(planted, color=False)
    lines = text.splitlines()
    assert lines[0] == "diff --behavior a/alpha b/beta"
    assert lines[1].startswith(f"suite sim {planted.suite_version}")
    assert "samples 12 (confirm collection 12)" in lines[2] and "q=0.05" in lines[2]
    stats = [line for line in lines if " | κp " in line]
    assert len(stats) == len(planted.domains) + 1  # and the overall line
    assert stats[0].split()[0].startswith("!") and PLANTED in stats[0].split(" | ")[0]
    law = planted.domain(PLANTED)
    assert law.replicated is True  # confirmed on the fresh confirm collection
    assert stats[0].split()[0] == "!✓"
    for line in stats[1:]:
        assert "!" not in line.split(" | ")[0]
    assert stats[-1].split()[0] == "all"
    assert f"shift {law.shift:4.1f} pt [{law.shift_low:4.1f}, {law.shift_high:4.1f}]" in stats[0]


def test_hunks_show_a_as_minus_lines_and_b_as_plus_lines(planted: Diff) -> None:
    assert planted.hunks
    text = render_text(planted, color=False)
    blocks = text.split("\n@@ ")[1:]
    assert len(blocks) == len(planted.hunks)
    for block, hunk in zip(blocks, planted.hunks, strict=True):
        header, *body = block.splitlines()
        assert header.startswith(f"{hunk.probe_id} [{PLANTED}] shift={hunk.shift:.0f}pt p=")
        assert ("(alone)" in header) == hunk.significant
        assert header.endswith("@@") and "replicated=" in header
        assert body[0] == " " + hunk.prompt.splitlines()[0]
        minus = [line for line in body if line.startswith("-")]
        plus = [line for line in body if line.startswith("+")]
        assert minus[0] == "-" + hunk.a.typical and plus[0] == "+" + hunk.b.typical
        top_a = max(hunk.a.distribution, key=lambda k: hunk.a.distribution[k])
        assert f"{top_a} {hunk.a.distribution[top_a]:.2f}" in minus[1]
        assert f"({hunk.b.samples} samples" in plus[1]
        assert body.index(minus[0]) < body.index(plus[0])


def test_colour_only_when_asked(planted: Diff) -> None:
    plain = render_text(planted, color=False)
    coloured = render_text(planted, color=True)
    assert not ANSI.search(plain)
    assert "\x1b[36m@@ " in coloured  # cyan hunk headers
    assert re.search(r"^\x1b\[31m-", coloured, re.M)  # red A lines
    assert re.search(r"^\x1b\[32m\+", coloured, re.M)  # green B lines
    assert coloured.startswith("\x1b[1mdiff --behavior")  # bold header
    assert ANSI.sub("", coloured) == plain


def test_null_pair_says_nothing_differs(pool: Pool) -> None:
    null = compute_diff(pool.alpha, pool.twin, pool.suite, n_permutations=500, n_resamples=500)
    text = render_text(null)
    assert "0 of 3 domains flagged" in text
    assert not any(line.startswith("@@") for line in text.splitlines())
    assert not [line for line in text.splitlines() if " | κp " in line
                and "!" in line.split(" | ")[0]]


def test_domain_scoped_diff_names_its_domain(pool: Pool) -> None:
    scoped = compute_diff(pool.alpha, pool.beta, pool.suite, domain=PLANTED,
                          n_permutations=500, n_resamples=500)
    text = render_text(scoped)
    assert text.splitlines()[1].endswith(f"· domain {PLANTED}")
    assert all(f"[{PLANTED}]" in line for line in text.splitlines() if line.startswith("@@"))


def test_kappa_bar_scales_over_zero_to_one() -> None:
    assert kappa_bar(0.5, 20) == "█" * 10 + "░" * 10
    assert kappa_bar(1.3, 4) == "████"
    assert kappa_bar(-0.2, 4) == "░░░░"
    assert kappa_bar(None, 4) == "    "


def test_json_is_the_diff_object(planted: Diff) -> None:
    text = render_json(planted)
    data = json.loads(text)
    assert data == planted.to_json()
    assert data["schema"] == "diffroute.diff/2" and data["flagged_domains"] == [PLANTED]
    assert "\n  " in text  # pretty-printed


class _Tags(HTMLParser):
    """Collects start tags and their attributes; checks nesting of the non-void elements."""

    VOID = frozenset({"meta", "br", "img", "line", "rect", "path", "input", "link"})

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.starts.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (tag, self.stack[-5:])
        self.stack.pop()


def test_html_is_self_contained_and_well_formed(planted: Diff) -> None:
    page = render_html(planted)
    assert page.startswith("<!doctype html>")
    parser = _Tags()
    parser.feed(page)
    assert parser.stack == []
    tags = [tag for tag, _ in parser.starts]
    assert "script" not in tags and "link" not in tags and "iframe" not in tags
    for _, attrs in parser.starts:
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http://", "https://", "//"))
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert "url(" not in page  # no external fonts or images from CSS either
    assert "<style>" in page


def test_html_has_summary_chart_and_side_by_side_hunks(planted: Diff) -> None:
    page = render_html(planted)
    assert page.count("<tr class=") == len(planted.domains) + 1
    svg = re.search(r"<svg.*?</svg>", page, re.S)
    assert svg is not None
    chart = ET.fromstring(svg.group(0))  # the inline SVG is well-formed XML
    rects = [el for el in chart.iter("rect")]
    assert len(rects) == len(planted.domains) + 1
    flagged = [r for r in rects if r.get("fill") == "#cf222e"]
    assert len(flagged) == len(planted.flagged_domains)
    whiskers = [el for el in chart.iter("path")]
    assert len(whiskers) == len(planted.domains) + 1
    assert page.count('class="hunk"') == len(planted.hunks)
    assert page.count('class="side a"') == page.count('class="side b"') == len(planted.hunks)
    first = planted.hunks[0]
    a_col = page.index('class="side a"', page.index(f'id="hunk-{first.probe_id}"'))
    b_col = page.index('class="side b"', a_col)
    assert first.a.typical in page[a_col:b_col] and first.b.typical in page[b_col:]


def test_html_escapes_model_and_probe_text(planted: Diff) -> None:
    evil = "<script>alert('x')</script>"
    hunk = planted.hunks[0]
    tainted = dataclasses.replace(
        planted, a="<img onerror=x>",
        hunks=[dataclasses.replace(
            hunk, prompt=f"What does {evil} do?",
            a=dataclasses.replace(hunk.a, typical=evil, distribution={evil: 1.0}),
            b=dataclasses.replace(hunk.b, typical="</pre><b>bold</b>"))])
    page = render_html(tainted)
    assert "<script" not in page and "<img" not in page and "<b>bold" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;/pre&gt;&lt;b&gt;bold&lt;/b&gt;" in page
    parser = _Tags()
    parser.feed(page)
    assert parser.stack == []


def test_text_shows_control_characters_escaped(planted: Diff) -> None:
    """Answers are untrusted: an OSC sequence (a terminal's title, or its clipboard) and a
    clear-screen reached the terminal as they were, piped or not."""
    hunk = planted.hunks[0]
    osc, clear = "\x1b]0;pwned\x07", "\x1b[2J"
    tainted = dataclasses.replace(planted, hunks=[dataclasses.replace(
        hunk, prompt=f"say {osc}",
        a=dataclasses.replace(hunk.a, typical=f"{clear}sure", distribution={osc: 1.0}))])
    text = render_text(tainted)
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b[2Jsure" in text


def test_text_says_when_the_overall_test_flags_what_no_domain_does(planted: Diff) -> None:
    """The JSON's `overall.status` said "flagged" while the text said "0 of 12 domains
    flagged" and nothing else."""
    quiet = dataclasses.replace(
        planted, flagged_domains=[],
        domains=[dataclasses.replace(d, flagged=False, status="not flagged")
                 for d in planted.domains],
        overall=dataclasses.replace(planted.overall, flagged=True, status="flagged",
                                    pvalue=0.004))
    summary = next(line for line in render_text(quiet).splitlines()
                   if "domains flagged" in line)
    assert summary.startswith(f" 0 of {len(planted.domains)} domains flagged; over all probes")
    assert "p=0.004" in summary


def test_matrix_text_and_json(pool: Pool, tmp_path: Path) -> None:
    matrix = pool_matrix([pool.alpha, pool.beta, pool.twin], pool.suite, bootstrap=50)
    text = render_matrix_text(matrix, PLANTED)
    lines = text.splitlines()
    assert lines[0].startswith(f"pool matrix · domain {PLANTED} · 3 models")
    kappa = matrix.domains[PLANTED].kappa
    head = next(i for i, line in enumerate(lines) if line.startswith("κp"))
    assert lines[head].split()[-3:] == ["alpha", "beta", "twin"]
    alpha_row = lines[head + 1].split()
    assert alpha_row[0] == "alpha" and alpha_row[1] == "—"
    assert alpha_row[2] == f"{kappa[0, 1]:.2f}" and alpha_row[3] == f"{kappa[0, 2]:.2f}"
    # the planted domain is where beta parts from alpha; twin stays close
    assert kappa[0, 2] > kappa[0, 1]
    with pytest.raises(KeyError, match="domains: all, history"):
        render_matrix_text(matrix, "nope")
    data = json.loads(render_matrix_json(matrix, PLANTED))
    assert list(data["domains"]) == [PLANTED] and data["models"] == ["alpha", "beta", "twin"]


def test_a_diff_comes_back_from_its_json(planted: Diff) -> None:
    """``GET /v1/profiles/diff?format=html`` renders the report from the diff's JSON."""
    data = planted.to_json()
    again = Diff.from_json(json.loads(json.dumps(data)))
    assert again.to_json() == data
    assert again.hunks and render_html(again) == render_html(Diff.from_json(data))
    with pytest.raises(KeyError):
        Diff.from_json({"a": "x", "b": "y"})
