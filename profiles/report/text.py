"""The terminal report of a diff, shaped like ``git diff --stat`` followed by the hunks.

::

    diff --behavior a/alpha b/beta
    suite sim 1+c52ec3415bfa
    samples 6 (no confirm collection) · q=0.05 · domains BH q=0.02 · 9 of 60 probes differ …

     !? law       20 | κp ████░░░░…  0.22 [ 0.05,  0.41] | shift 64.2 pt [54.8, 72.1] p=0.0005
        history   20 | κp ███████…  0.35 [ 0.13,  0.48] | shift  0.0 pt [ 0.0,  7.4] p=0.61
        all       60 | κp █████░░…  0.24 [ 0.13,  0.33] | shift 34.4 pt [22.8, 44.3] p=0.0005

    @@ law-0000 [law] shift=89pt p=0.0005 q=0.014 (alone) replicated=untested @@
     [law] question 0: which option holds?
    -B. option B
    -  B 1.00  (6 samples)
    +C. option C
    +  C 1.00  (6 samples)

Colour (ANSI) only when asked: the CLI asks when stdout is a terminal and ``NO_COLOR`` is unset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from profiles.diff import AnswerSummary, Diff, DomainDiff, Hunk
from profiles.matrix import PoolMatrix

BAR_WIDTH = 20
PROMPT_LINES = 8
LINE_CHARS = 100
ANSWER_LINES = 4
DIST_ENTRIES = 6

_RESET = "\x1b[0m"
_BOLD, _RED, _GREEN, _YELLOW, _CYAN = "1", "31", "32", "33", "36"


@dataclass(frozen=True)
class _Paint:
    """Wraps text in ANSI codes, or leaves it alone when colour is off."""

    color: bool

    def __call__(self, text: str, *codes: str) -> str:
        if not self.color or not codes or not text:
            return text
        return f"\x1b[{';'.join(codes)}m{text}{_RESET}"


def render_text(diff: Diff, color: bool = False) -> str:
    """The diff as a ``git diff --stat``-like summary, then its hunks (``-`` A, ``+`` B)."""
    paint = _Paint(color)
    parts = [*_header(diff, paint), "", *_stat(diff, paint), *_notes(diff)]
    if diff.hunks:
        for hunk in diff.hunks:
            parts += ["", *_hunk(hunk, paint)]
    elif not diff.n_probes_tested:  # not "no difference": nothing could be tested
        parts += ["", f"nothing tested: all {len(diff.left_out)} shared probes were left out "
                      "(the notes say why), so this diff says nothing about these models"]
    else:
        parts += ["", f"no probe differs beyond noise (q={_num(diff.settings.get('q'))})"]
    return "\n".join(parts) + "\n"


# --- header and summary ----------------------------------------------------------------------


def _header(diff: Diff, paint: _Paint) -> list[str]:
    s = diff.settings
    confirm = s.get("confirm_samples") or 0
    confirm_text = f"confirm collection {confirm}" if confirm else "no confirm collection"
    if not diff.n_probes_tested:
        confirm_text = "nothing tested"  # (a confirm collection may exist: it was not read)
    scope = f" · domain {s['domain']}" if s.get("domain") else ""
    return [
        paint(f"diff --behavior a/{diff.a} b/{diff.b}", _BOLD),
        paint(f"suite {diff.suite} {diff.suite_version}{scope}", _BOLD),
        paint(f"samples {s.get('samples')} ({confirm_text}) · q={_num(s.get('q'))} · domains "
              f"BH q={_num(s.get('q_domain'))} · {diff.n_significant} of "
              f"{diff.n_probes_tested} probes differ beyond noise", _BOLD),
    ]


def ranked_domains(diff: Diff) -> list[DomainDiff]:
    """Flagged domains first (as the diff ranks them), then the rest by shift."""
    flagged = {name: i for i, name in enumerate(diff.flagged_domains)}
    return sorted(diff.domains, key=lambda d: (
        d.name not in flagged, flagged.get(d.name, 0), -_finite(d.shift), d.name))


def _stat(diff: Diff, paint: _Paint) -> list[str]:
    rows = ranked_domains(diff)
    width = max(len(d.name) for d in [*rows, diff.overall])
    n_width = max(len(str(d.n_probes)) for d in [*rows, diff.overall])
    lines = [_stat_line(d, width, n_width, paint) for d in rows]
    lines.append(_stat_line(diff.overall, width, n_width, paint, marker=False))
    flagged = diff.flagged_domains
    summary = f" {len(flagged)} of {len(rows)} domains flagged"
    summary += (": " + ", ".join(flagged) if flagged else "")
    if diff.overall.flagged:  # its own test (as in the JSON's overall.status), never replicated
        summary += (f"; over all probes together the models differ beyond noise "
                    f"(p={_pvalue(diff.overall.pvalue or 0.0)}; replication not tested)")
    lines.append(summary)
    if flagged:
        lines.append(" ! flagged · ✓ replicated · ✗ not replicated · ? replication not tested")
    return lines


def _stat_line(d: DomainDiff, width: int, n_width: int, paint: _Paint,
               marker: bool = True) -> str:
    mark = domain_marker(d) if marker else ""
    mark = paint(f"{mark:<2}", _RED, _BOLD) if d.flagged and marker else f"{mark:<2}"
    name = paint(f"{d.name:<{width}}", _BOLD) if d.flagged else f"{d.name:<{width}}"
    kappa = (f"κp {kappa_bar(d.kappa_p)} {_num(d.kappa_p, '5.2f')} "
             f"[{_num(d.kappa_p_low, '5.2f')}, {_num(d.kappa_p_high, '5.2f')}]")
    shift = (f"shift {_num(d.shift, '4.1f')} pt "
             f"[{_num(d.shift_low, '4.1f')}, {_num(d.shift_high, '4.1f')}]")
    test = "too small to test" if d.pvalue is None else f"p={_pvalue(d.pvalue)}"
    return f" {mark} {name} {d.n_probes:>{n_width}} | {kappa} | {shift} {test}"


def domain_marker(d: DomainDiff) -> str:
    """``!`` for a flagged domain, then ``✓``/``✗``/``?``: replicated, not, not tested."""
    if not d.flagged:
        return ""
    return "!" + {True: "✓", False: "✗", None: "?"}[d.replicated]


def kappa_bar(kappa: float | None, width: int = BAR_WIDTH) -> str:
    """κp as a bar of ``█`` scaled over 0..1 (negative κp is an empty bar)."""
    if kappa is None or not math.isfinite(kappa):
        return " " * width
    filled = round(min(1.0, max(0.0, kappa)) * width)
    return "█" * filled + "░" * (width - filled)


def _notes(diff: Diff) -> list[str]:
    return [f" note: {note}" for note in diff.notes]


# --- hunks -----------------------------------------------------------------------------------


def _hunk(hunk: Hunk, paint: _Paint) -> list[str]:
    lines = [paint(hunk_header(hunk), _CYAN)]
    lines += [" " + line for line in _trim(hunk.prompt, PROMPT_LINES)]
    lines += [paint(line, _RED) for line in _side("-", hunk.a)]
    lines += [paint(line, _GREEN) for line in _side("+", hunk.b)]
    return lines


def hunk_header(hunk: Hunk) -> str:
    """``@@ <probe id> [domains] shift=… pt p=… q=… (alone|in domain) replicated=… @@``.

    ``alone``: significant by itself after FDR control; ``in domain``: nominally significant
    (p <= q) in a flagged domain, shown because it carries the domain's difference.
    """
    replicated = {True: "yes", False: "no", None: "untested"}[hunk.replicated]
    extra = "" if hunk.logprob_tv is None else f" tv(logprobs)={hunk.logprob_tv:.2f}"
    alone = "alone" if hunk.significant else "in domain"
    return (f"@@ {hunk.probe_id} [{', '.join(hunk.domains)}] shift={hunk.shift:.0f}pt "
            f"p={_pvalue(hunk.pvalue)} q={_pvalue(hunk.qvalue)} ({alone}) "
            f"replicated={replicated}{extra} @@")


def _side(sign: str, answer: AnswerSummary) -> list[str]:
    lines = [sign + line for line in _trim(answer.typical or "(empty)", ANSWER_LINES)]
    return [*lines, f"{sign}  {distribution_text(answer)}"]


def distribution_text(answer: AnswerSummary) -> str:
    """``B 0.83  A 0.17  (6 samples, 1 unparsed)``; free answers only show the counts."""
    ranked = sorted(answer.distribution.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = "  ".join(f"{_short(value)} {share:.2f}" for value, share in ranked[:DIST_ENTRIES])
    if len(ranked) > DIST_ENTRIES:
        shown += f"  … {len(ranked) - DIST_ENTRIES} more"
    counts = sample_counts(answer)
    return f"{shown}  {counts}" if shown else counts


def sample_counts(answer: AnswerSummary) -> str:
    """``(6 samples, 1 unparsed)``."""
    unparsed = f", {answer.unparsed} unparsed" if answer.unparsed else ""
    return f"({answer.samples} samples{unparsed})"


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0b, 0x20), 0x7f,
                                          *range(0x80, 0xa0))}
"""C0/C1 control characters but tab and newline, shown escaped: model answers are untrusted,
and raw ESC sequences (clear screen, OSC title or clipboard writes) reached the terminal."""


def visible(text: str) -> str:
    """``text`` with its control characters (but tab and newline) shown escaped, for a
    terminal: what models wrote is untrusted."""
    return text.translate(_CONTROL)


def _short(value: str, limit: int = 24) -> str:
    value = " ".join(visible(value).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _trim(text: str, max_lines: int) -> list[str]:
    """At most ``max_lines`` lines of at most ``LINE_CHARS`` characters, marked when cut."""
    lines = visible(text.strip()).splitlines() or [""]
    cut = [line if len(line) <= LINE_CHARS else line[: LINE_CHARS - 1] + "…"
           for line in lines[:max_lines]]
    if len(lines) > max_lines:
        cut.append(f"… ({len(lines) - max_lines} more lines)")
    return cut


# --- numbers ---------------------------------------------------------------------------------


def _finite(x: float | None) -> float:
    return x if x is not None and math.isfinite(x) else -math.inf


def _num(x: object, fmt: str = "g") -> str:
    if not isinstance(x, int | float) or not math.isfinite(x):
        return "n/a"
    return format(x, fmt)


def _pvalue(x: float) -> str:
    return "n/a" if not math.isfinite(x) else (f"{x:.3f}" if x >= 0.001 else f"{x:.1e}")


# --- pool matrix -----------------------------------------------------------------------------


def render_matrix_text(matrix: PoolMatrix, domain: str = "all") -> str:
    """The pool's pairwise κp, agreement and error consistency on one domain, and accuracies."""
    if domain not in matrix.domains:
        known = ", ".join(matrix.domains) or "none"
        raise KeyError(f"domain '{domain}' is not in the matrix (domains: {known})")
    m = matrix.domains[domain]
    names = list(matrix.models)
    lines = [f"pool matrix · domain {domain} · {len(names)} models · version {matrix.version}",
             f"{m.n_kappa} gold choice probes (κp) · {m.n_gold} gold probes · "
             f"{m.n_categorical} categorical probes", ""]
    tables: list[tuple[str, Sequence[Sequence[float]]]] = [
        ("κp (agreement beyond chance)", m.kappa.tolist()),
        ("agreement", m.agreement.tolist()),
        ("error consistency", m.error_consistency.tolist()),
    ]
    for title, values in tables:
        lines += [*_square(title, names, values), ""]
    lines += _row("accuracy", names, m.accuracy.tolist())
    return "\n".join(lines) + "\n"


def _square(title: str, names: list[str], values: Sequence[Sequence[float]]) -> list[str]:
    first = max(len(title), *(len(n) for n in names))
    cols = [max(6, len(n)) for n in names]
    head = title.ljust(first) + "".join(f"  {n:>{w}}" for n, w in zip(names, cols, strict=True))
    rows = [
        name.ljust(first) + "".join(
            f"  {'—' if i == j else _num(v, '.2f'):>{w}}"
            for j, (v, w) in enumerate(zip(values[i], cols, strict=True)))
        for i, name in enumerate(names)
    ]
    return [head, *rows]


def _row(title: str, names: list[str], values: Sequence[float]) -> list[str]:
    cols = [max(6, len(n)) for n in names]
    head = " " * len(title) + "".join(f"  {n:>{w}}" for n, w in zip(names, cols, strict=True))
    row = title + "".join(f"  {_num(v, '.2f'):>{w}}" for v, w in zip(values, cols, strict=True))
    return [head, row]
