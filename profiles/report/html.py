"""The HTML report of a diff: one self-contained file that needs no network to be viewed.

Inline CSS and an inline SVG chart; no script at all and no external URL. Every piece of text
that comes from a model, a probe or a configuration goes through :func:`html.escape`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable

from profiles.diff import AnswerSummary, Diff, DomainDiff, Hunk
from profiles.report.text import domain_marker, hunk_header, ranked_domains, sample_counts

CHART_WIDTH = 760
LABEL_WIDTH = 170
PLOT_WIDTH = 380
ROW_HEIGHT = 28
TICK_GAP = 48
"""Least distance between two axis labels' centres, in chart units (a label is ~36 wide)."""

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;
  max-width:1100px;padding:0 1em;color:#1f2328;background:#fff}
h1{font:600 1.25em ui-monospace,SFMono-Regular,Menlo,monospace}
h2{margin-top:2em;border-bottom:1px solid #d0d7de;padding-bottom:.2em}
.meta{color:#57606a;margin:.2em 0}
table.summary{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
table.summary th,table.summary td{padding:.3em .6em;border-bottom:1px solid #eaeef2;
  text-align:right;white-space:nowrap}
table.summary th{white-space:normal;vertical-align:bottom}
@media (max-width:75em){table.summary td{white-space:normal}}
@media (max-width:60em){table.summary{font-size:.9em}.kbar{width:40px}
  table.summary th,table.summary td{padding:.3em .3em}}
@media (max-width:45em){table.summary{display:block;overflow-x:auto}}
table.summary th:first-child,table.summary td:first-child{text-align:left}
tr.flagged td{background:#fff8f0}
tr.overall td{font-weight:600;border-top:2px solid #d0d7de}
.mark{color:#cf222e;font-weight:700}
.kbar{display:inline-block;width:80px;height:.7em;background:#eaeef2;vertical-align:middle;
  margin-right:.4em}
.kbar span{display:block;height:100%;background:#0969da}
.hunk{border:1px solid #d0d7de;border-radius:6px;margin:1.2em 0;overflow:hidden}
.hunk h3{margin:0;padding:.4em .8em;background:#ddf4ff;color:#0550ae;
  font:600 .9em ui-monospace,SFMono-Regular,Menlo,monospace}
.prompt{margin:0;padding:.6em .8em;background:#f6f8fa;white-space:pre-wrap;
  font:.85em ui-monospace,SFMono-Regular,Menlo,monospace;border-bottom:1px solid #d0d7de}
.sides{display:grid;grid-template-columns:1fr 1fr}
.side{padding:.6em .8em;min-width:0}
.side.a{background:#ffebe9;border-right:1px solid #d0d7de}
.side.b{background:#dafbe1}
.side h4{margin:0 0 .3em;font:600 .85em ui-monospace,SFMono-Regular,Menlo,monospace}
.side pre{white-space:pre-wrap;margin:0 0 .4em;font:.85em ui-monospace,SFMono-Regular,Menlo,
  monospace}
.prompt,.side pre{overflow-wrap:anywhere}
.dist{font-size:.8em;color:#57606a}
.dist div{display:flex;align-items:center;gap:.4em}
.dist .bar{height:.6em;background:#57606a;opacity:.6}
svg text{font:12px system-ui,sans-serif;fill:#1f2328}
svg .muted{fill:#57606a}
footer{margin-top:2em;color:#57606a;font-size:.85em}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x, fmt)


def render_html(diff: Diff) -> str:
    """The whole report: header, summary table, per-domain chart, side-by-side hunks."""
    title = f"diff --behavior a/{diff.a} b/{diff.b}"
    body = [
        f"<header><h1>{_e(title)}</h1>{_meta(diff)}</header>",
        "<h2>Summary</h2>", _summary_table(diff),
        "<h2>Divergence beyond noise, per domain</h2>", _chart(diff),
        f"<h2>Hunks ({len(diff.hunks)})</h2>", *(_hunk(h, diff) for h in diff.hunks),
        "" if diff.hunks else "<p>No probe differs beyond noise.</p>",
        _footer(diff),
    ]
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _meta(diff: Diff) -> str:
    s = diff.settings
    lines = [
        f"suite <b>{_e(diff.suite)}</b> {_e(diff.suite_version)}"
        + (f" · domain <b>{_e(s['domain'])}</b>" if s.get("domain") else ""),
        f"samples {_e(s.get('samples'))} (confirm collection {_e(s.get('confirm_samples'))}) · "
        f"q={_e(s.get('q'))} · domains BH q={_e(s.get('q_domain'))} · {diff.n_significant} of "
        f"{diff.n_probes_tested} probes differ beyond noise",
        "flagged domains: " + (_e(", ".join(diff.flagged_domains)) or "none"),
    ]
    return "".join(f"<p class=\"meta\">{line}</p>" for line in lines)


# --- summary table ---------------------------------------------------------------------------


def _summary_table(diff: Diff) -> str:
    heads = ["domain", "probes", "κp [95% CI]", "agreement", "error consistency",
             f"accuracy {diff.a} / {diff.b}", "shift, points [95% CI]", "p (domain)",
             "significant", ""]
    rows = [_summary_row(d) for d in ranked_domains(diff)]
    rows.append(_summary_row(diff.overall, overall=True))
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    return f"<table class=\"summary\"><thead><tr>{head}</tr></thead><tbody>" + \
        "".join(rows) + "</tbody></table>"


def _summary_row(d: DomainDiff, overall: bool = False) -> str:
    cls = "overall" if overall else ("flagged" if d.flagged else "")
    width = 0.0 if d.kappa_p is None or not math.isfinite(d.kappa_p) else \
        min(1.0, max(0.0, d.kappa_p))
    kappa = (f"<span class=\"kbar\"><span style=\"width:{width * 100:.0f}%\"></span></span>"
             f"{_num(d.kappa_p, '.2f')} [{_num(d.kappa_p_low, '.2f')}, "
             f"{_num(d.kappa_p_high, '.2f')}]")
    cells = [
        _e(d.name), str(d.n_probes), kappa, _num(d.agreement, ".2f"),
        _num(d.error_consistency, ".2f"),
        f"{_num(d.accuracy_a, '.2f')} / {_num(d.accuracy_b, '.2f')}",
        f"{_num(d.shift, '.1f')} [{_num(d.shift_low, '.1f')}, {_num(d.shift_high, '.1f')}]",
        "too small" if d.status == "too small" else _num(d.pvalue, ".4f"),
        str(d.n_significant),
        "" if overall else f"<span class=\"mark\">{_e(domain_marker(d))}</span>",
    ]
    return f"<tr class=\"{cls}\">" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


# --- chart -----------------------------------------------------------------------------------


def _chart(diff: Diff) -> str:
    """Horizontal bars of divergence with CI whiskers; κp written beside each row."""
    rows = [*ranked_domains(diff), diff.overall]
    lo, hi = _extent(rows)

    def x(value: float) -> float:
        return LABEL_WIDTH + (value - lo) / (hi - lo) * PLOT_WIDTH

    height = ROW_HEIGHT * (len(rows) + 1)
    zero = x(0.0)
    parts = [f"<svg viewBox=\"0 0 {CHART_WIDTH} {height}\" width=\"100%\" role=\"img\" "
             f"aria-label=\"divergence per domain\">",
             f"<line x1=\"{zero:.1f}\" y1=\"0\" x2=\"{zero:.1f}\" y2=\"{height - ROW_HEIGHT}\" "
             "stroke=\"#8c959f\"/>"]
    for i, d in enumerate(rows):
        parts.append(_chart_row(d, i * ROW_HEIGHT, x, d is diff.overall))
    axis_y = height - ROW_HEIGHT / 2
    for value in _ticks(lo, hi):
        parts.append(f"<text class=\"muted\" x=\"{x(value):.1f}\" y=\"{axis_y:.1f}\" "
                     f"text-anchor=\"middle\">{value:+.2f}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _ticks(lo: float, hi: float) -> list[float]:
    """The axis labels' values: 0 and the multiples of a round step (1, 2 or 5 × 10^k) inside
    [lo, hi], the step the smallest that keeps labels :data:`TICK_GAP` apart (so that no label,
    e.g. ``-0.01``, is drawn over ``+0.00``)."""
    span = hi - lo
    step = next(m * 10.0**k for k in range(-3, 7) for m in (1, 2, 5)
                if m * 10.0**k / span * PLOT_WIDTH >= TICK_GAP)
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [k * step + 0.0 for k in range(first, last + 1)]


def _extent(rows: Iterable[DomainDiff]) -> tuple[float, float]:
    values = [v for d in rows for v in (d.shift, d.shift_low, d.shift_high)
              if v is not None and math.isfinite(v)]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    if hi - lo < 10:  # a flat diff still gets a readable axis (points)
        hi = lo + 10
    return lo, hi


def _chart_row(d: DomainDiff, top: float, x: Callable[[float], float], overall: bool) -> str:
    mid = top + ROW_HEIGHT / 2
    colour = "#cf222e" if d.flagged else "#8c959f"
    if overall:
        colour = "#0969da"
    weight = ' font-weight="bold"' if overall else ""
    label = f"{domain_marker(d)} {d.name}".strip()
    parts = [f"<g><title>{_e(d.name)}: shift {_num(d.shift, '.1f')} points "
             f"[{_num(d.shift_low, '.1f')}, {_num(d.shift_high, '.1f')}], "
             f"κp {_num(d.kappa_p, '.2f')}</title>",
             f"<text x=\"4\" y=\"{mid + 4:.1f}\"{weight}>"
             f"{_e(label)}</text>"]
    if d.shift is not None and math.isfinite(d.shift):
        a, b = sorted((x(0.0), x(d.shift)))
        parts.append(f"<rect x=\"{a:.1f}\" y=\"{top + 7:.1f}\" width=\"{max(b - a, 1):.1f}\" "
                     f"height=\"{ROW_HEIGHT - 14}\" fill=\"{colour}\" opacity=\"0.75\"/>")
    if _finite(d.shift_low) and _finite(d.shift_high):
        low, high = x(d.shift_low), x(d.shift_high)
        parts.append(
            f"<path d=\"M{low:.1f} {mid:.1f}H{high:.1f}M{low:.1f} {mid - 6:.1f}V{mid + 6:.1f}"
            f"M{high:.1f} {mid - 6:.1f}V{mid + 6:.1f}\" stroke=\"#1f2328\" fill=\"none\"/>")
    right = LABEL_WIDTH + PLOT_WIDTH + 12
    parts.append(f"<text x=\"{right}\" y=\"{mid + 4:.1f}\">{_num(d.shift, '.1f')} pt</text>"
                 f"<text class=\"muted\" x=\"{right + 70}\" y=\"{mid + 4:.1f}\">"
                 f"κp {_num(d.kappa_p, '.2f')}</text></g>")
    return "".join(parts)


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


# --- hunks -----------------------------------------------------------------------------------


def _hunk(hunk: Hunk, diff: Diff) -> str:
    return (f"<section class=\"hunk\" id=\"hunk-{_e(hunk.probe_id)}\">"
            f"<h3>{_e(hunk_header(hunk))}</h3>"
            f"<pre class=\"prompt\">{_e(hunk.prompt)}</pre>"
            f"<div class=\"sides\">{_side('a', diff.a, hunk.a)}{_side('b', diff.b, hunk.b)}"
            "</div></section>")


def _side(which: str, model: str, answer: AnswerSummary) -> str:
    ranked = sorted(answer.distribution.items(), key=lambda kv: (-kv[1], kv[0]))
    bars = "".join(
        f"<div><span class=\"bar\" style=\"width:{share * 120:.0f}px\"></span>"
        f"{_e(value)} {share:.2f}</div>" for value, share in ranked)
    return (f"<div class=\"side {which}\"><h4>{which}/{_e(model)}</h4>"
            f"<pre>{_e(answer.typical or '(empty)')}</pre>"
            f"<div class=\"dist\">{bars}<div>{_e(sample_counts(answer))}</div></div></div>")


def _footer(diff: Diff) -> str:
    notes = "".join(f"<li>{_e(n)}</li>" for n in diff.notes)
    versions = ", ".join(f"{m}: {v}" for m, v in diff.profile_versions.items())
    return (f"<footer>{f'<ul>{notes}</ul>' if notes else ''}"
            f"<p>schema {_e(diff.schema)} · profiles {_e(versions)} · "
            f"{_e(diff.settings.get('permutations'))} permutations, "
            f"{_e(diff.settings.get('resamples'))} resamples, seed "
            f"{_e(diff.settings.get('seed'))}</p></footer>")
