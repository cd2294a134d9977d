"""Reports of a behavioral diff: text for a terminal, one self-contained HTML file, JSON.

* :func:`render_text` — a ``git diff --stat``-like summary per domain, then the hunks;
* :func:`render_html` — the same as a page with a per-domain chart and side-by-side hunks;
* :func:`render_json` — the :class:`profiles.diff.Diff` object (schema ``diffroute.diff/2``);
* :func:`render_matrix_text` / :func:`render_matrix_json` — the pool's pairwise matrix.
"""

from __future__ import annotations

import json

from profiles.diff import Diff
from profiles.matrix import PoolMatrix
from profiles.report.html import render_html
from profiles.report.text import render_matrix_text, render_text

__all__ = ["render_html", "render_json", "render_matrix_json", "render_matrix_text",
           "render_text"]


def render_json(diff: Diff) -> str:
    """``diff.to_json()`` pretty-printed (non-ASCII model text kept as is)."""
    return json.dumps(diff.to_json(), indent=2, ensure_ascii=False) + "\n"


def render_matrix_json(matrix: PoolMatrix, domain: str | None = None) -> str:
    """The pool matrix as JSON; only ``domain`` when one is given."""
    data = matrix.to_json()
    if domain is not None:
        data["domains"] = {domain: data["domains"][domain]}
    return json.dumps(data, indent=2) + "\n"
