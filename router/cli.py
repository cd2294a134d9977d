"""The ``diffroute`` command line. Argument parsing lives here and nowhere else.

Every command turns a :class:`router.errors.DiffrouteError` (and bad input in general) into one
line on stderr and a non-zero exit: 2 for usage and configuration errors, 1 for the rest.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import sys
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

import click

from router.config import PROFILE_SAMPLES, Settings, load_settings
from router.errors import (
    ConfigError,
    DiffrouteError,
    StartupError,
    UnknownDomainError,
    UnknownModelError,
)

if TYPE_CHECKING:  # the diff machinery loads numpy; the CLI imports it only when used
    from router.profiling.sources import ProfileQuery

T = TypeVar("T")


def resolve_settings(config: str | None, data_dir: str | None = None) -> Settings:
    """The pool file given (or ``$DIFFROUTE_CONFIG``), else the embedded default pool."""
    for hint, given in (("--config", config), ("--data-dir", data_dir)):
        if given is not None and not given.strip():  # `--config "$UNSET"`: not the default
            raise click.BadParameter("is empty", param_hint=hint)
    path = config or os.environ.get("DIFFROUTE_CONFIG")
    if path:
        settings = load_settings(path)
    else:
        from router.embedded import default_settings

        settings = default_settings()
    if data_dir:
        try:
            expanded = Path(data_dir).expanduser()
        except RuntimeError as exc:  # `~nosuchuser/...`
            raise click.BadParameter(f"'{data_dir}': {exc}", param_hint="--data-dir") from None
        settings = settings.model_copy(update={"data_dir": expanded})
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


_errors: TextIO | None = None
"""Where errors are written: a duplicate of descriptor 2 taken when the command starts.
llama-cpp-python silences a model load by pointing descriptors 1 and 2 *and* ``sys.stderr``
at /dev/null, from whichever thread loads; a start-up failure of ``serve`` while the weights
load in the background would otherwise exit without its one line."""


def _error_stream() -> TextIO:
    global _errors
    if _errors is None:
        try:
            _errors = os.fdopen(os.dup(sys.stderr.fileno()), "w", encoding="utf-8",
                                errors="replace")
        except (AttributeError, OSError, ValueError):  # no descriptor (a test's stream)
            return sys.stderr
    return _errors


def _say(line: str) -> None:
    """One line on stderr: a message that carries an upstream's or a model's text (an error
    body, an answer) has its line breaks joined and its control characters shown escaped,
    never sent to the terminal (they were: two lines, and an OSC title write, from one 400)."""
    line = " ".join(line.replace("\r\n", "\n").split("\n"))
    if any((c < " " and c != "\t") or "\x7f" <= c < "\xa0" for c in line):
        from profiles.report.text import visible

        line = visible(line)
    click.echo(line, file=_error_stream())


def fail(message: str, code: int = 1) -> None:
    _say(f"diffroute: error: {message}")
    sys.exit(code)


class Temperature(click.FloatRange):
    """0 to 2; click's ``FloatRange`` lets ``nan`` through (every comparison with it is false):
    a build stored under it, and ``diff`` of it failed with "probabilities must be finite"."""

    def __init__(self) -> None:
        super().__init__(0, 2)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if number != number:  # NaN
            self.fail(f"{value!r} is not a number in the range 0<=x<=2.", param, ctx)
        return number


config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="Pool file (YAML). Default: $DIFFROUTE_CONFIG, else the embedded local pool.",
)
data_dir_option = click.option(
    "--data-dir", "data_dir", type=click.Path(file_okay=False), default=None,
    help="Where observations, profiles and live diffs are stored.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffroute")
def cli() -> None:
    """diffroute: pair LLMs by their behavioral diff profiles."""


@cli.command()
@config_option
@data_dir_option
def models(config: str | None, data_dir: str | None) -> None:
    """List the pool: name, backend, family and status."""
    from router.pool import Pool

    settings = resolve_settings(config, data_dir)

    async def statuses() -> list[Any]:
        async with Pool.open(settings) as pool:
            return await pool.status()

    rows = run(statuses())
    width = max(len(r.name) for r in rows)
    for row in rows:
        detail = f"  ({row.status.detail})" if row.status.detail else ""
        state = f"{row.status.state}{detail}"
        click.echo(f"{row.name:<{width}}  {row.kind:<9} {row.family:<10} {state}")
    if not all(r.status.ok for r in rows):
        sys.exit(1)


@cli.command()
@config_option
@data_dir_option
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--temperature", type=Temperature(), default=0.7, show_default=True)
@click.option("--seed", type=int, default=None)
@click.argument("model")
@click.argument("prompt")
def ask(config: str | None, data_dir: str | None, max_tokens: int, temperature: float,
        seed: int | None, model: str, prompt: str) -> None:
    """Print one completion of MODEL for PROMPT."""
    from profiles.protocol import SampleRequest
    from router.pool import Pool

    settings = resolve_settings(config, data_dir)
    settings.model(model)  # unknown names fail before anything loads
    request = SampleRequest(messages=({"role": "user", "content": prompt},),
                            max_tokens=max_tokens, temperature=temperature, seed=seed)

    async def one() -> str:
        async with Pool.open(settings) as pool:
            result = await pool.sample(model, request)
            return result.samples[0].text

    answer = run(one()).strip()
    if sys.stdout.isatty():  # what a model wrote is untrusted: no ESC sequence to the terminal
        from profiles.report.text import visible

        answer = visible(answer)
    click.echo(answer)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    import structlog

    from router.logging import configure_logging

    # commands print their results on stdout: logs (warnings and up) go to stderr; `serve`
    # replaces this with the service's own logging (an embedding program's setup is kept)
    if not structlog.is_configured():
        configure_logging("console", "WARNING", stream=sys.stderr.buffer)
    warnings.showwarning = _warn_in_one_line
    _error_stream()  # taken now, before any library can redirect descriptor 2
    if not (sys.argv[1:] if argv is None else argv):  # bare `diffroute`: the help, not an error
        click.echo(cli.get_help(click.Context(cli, info_name="diffroute")))
        return
    try:
        cli.main(args=argv, prog_name="diffroute", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.exceptions.NoArgsIsHelpError as exc:  # `diffroute profile`: as bare diffroute
        click.echo(exc.ctx.get_help() if exc.ctx else exc.format_message())
    except click.ClickException as exc:
        _say(f"diffroute: error: {exc.format_message()}")
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        where = f"{exc.source}: " if exc.source else ""
        for problem in exc.problems:
            _say(f"diffroute: error: {where}{problem}")
        sys.exit(2)
    except (StartupError, UnknownModelError, UnknownDomainError) as exc:
        fail(str(exc), 2)  # cannot start, or a name that is not there: a usage error
    except DiffrouteError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        fail(str(exc))
    except Exception as exc:  # a bug or an input nothing above names: still one line
        if os.environ.get("DIFFROUTE_DEBUG"):
            raise
        message = " ".join(str(exc).split()) or "(no message)"
        fail(f"{message} ({type(exc).__name__}; DIFFROUTE_DEBUG=1 shows where)")


def _warn_in_one_line(message: Warning | str, category: type[Warning], filename: str,
                      lineno: int, file: Any = None, line: str | None = None) -> None:
    """A warning (e.g. a deprecated pool-file key) as one line, not Python's two with the
    source line."""
    _say(f"diffroute: warning: {message}")


@cli.group()
def profile() -> None:
    """Collect observations and summarise the resulting profiles."""


@profile.command("build")
@config_option
@data_dir_option
@click.option("--suite", default="default", show_default=True,
              help="A shipped suite name (default, smoke) or a .jsonl file.")
@click.option("--models", "model_names", default=None,
              help="Comma-separated pool names (default: the whole pool).")
@click.option("--samples", type=click.IntRange(1, 100), default=PROFILE_SAMPLES,
              show_default=True, help="Samples per probe (k): the noise floor needs k >= 2; "
              "a confirm collection of k more follows.")
@click.option("--temperature", type=Temperature(), default=0.7, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Requests in flight per model (the model's max_concurrency still applies).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also write each profile as compact JSON into this directory.")
def profile_build(config: str | None, data_dir: str | None, suite: str, model_names: str | None,
                  samples: int, temperature: float, concurrency: int,
                  export_dir: str | None) -> None:
    """Collect observations (cached and resumable), then print each model's summary."""
    from router.profiling.build import GIVE_UP_AFTER, build_profiles

    settings = resolve_settings(config, data_dir)
    names = _split_models(model_names, settings)
    if export_dir is not None:  # before the collection, not after it (an hour, embedded)
        try:
            Path(export_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise click.BadParameter(f"'{export_dir}': {exc.strerror or exc}",
                                     param_hint="--export") from None
    if samples < 2:  # accepted (a quick look at accuracy), but a dead end for what follows
        _say("diffroute: warning: --samples 1 gives no noise floor: `diffroute diff` and the "
             "pairing policy need at least 2 samples per probe")
    summaries, report = run(build_profiles(settings, suite, names, samples, temperature,
                                           concurrency,
                                   Path(export_dir) if export_dir else None))
    _say(f"collected {report.stored_samples} samples in {report.calls} calls "
         f"({report.retries} retries); {report.cached_samples} of "
         f"{report.planned_samples} were cached")
    _print_summaries(summaries)
    for summary in summaries:
        if export_dir is not None and not summary["exported"]:
            _say(f"diffroute: warning: {summary['model']}: not exported (probes are missing; "
                 f"{Path(export_dir) / (summary['model'] + '.json.gz')} is left as it was): a "
                 "re-run that collects them exports it")
    for name in report.given_up:
        _say(f"diffroute: warning: {name}: gave up after {GIVE_UP_AFTER} probes in a row "
             "failed; its other probes were not requested (a re-run collects them, and the "
             "confirm collection)")
    if report.failures:
        models = sorted({name for name, _, _ in report.failures})
        fail(f"{len(report.failures)} probe(s) could not be collected ({', '.join(models)}; "
             "the warnings above say why): they are not stored, and a re-run retries them")


@profile.command("show")
@config_option
@data_dir_option
@click.option("--suite", default="default", show_default=True)
@click.option("--models", "model_names", default=None)
@click.option("--samples", type=click.IntRange(1, 100), default=PROFILE_SAMPLES,
              show_default=True)
@click.option("--temperature", type=Temperature(), default=0.7, show_default=True)
def profile_show(config: str | None, data_dir: str | None, suite: str, model_names: str | None,
                 samples: int, temperature: float) -> None:
    """Summarise stored profiles without calling any model."""
    from router.profiling.build import summarize_profiles

    settings = resolve_settings(config, data_dir)
    names = _split_models(model_names, settings)
    _print_summaries(summarize_profiles(settings, suite, names, samples, temperature))


def _split_models(value: str | None, settings: Settings) -> list[str]:
    if not value:
        return [m.name for m in settings.models]
    names = list(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))  # once each
    if not names:
        raise click.BadParameter(f"names no model: '{value}'", param_hint="--models")
    for name in names:
        settings.model(name)
    return names


def _print_summaries(summaries: list[dict[str, Any]]) -> None:
    cols = ["model", "coverage", "accuracy", "refusal_rate", "answer_entropy_bits",
            "parse_failure_rate"]
    heads = ["model", "coverage", "accuracy", "refusals", "entropy", "parse fail"]
    table = [[_cell(s.get(c)) for c in cols] for s in summaries]
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(heads)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)))
    for row in table:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    for s in summaries:
        for note in s.get("notes", []):
            _say(f"diffroute: note: {note}")
        for model, probe, error in s.get("failures", [])[:5]:
            _say(f"diffroute: warning: {model} {probe}: {error}")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


@cli.command()
@config_option
@data_dir_option
@click.option("--host", default=None, help="Listen address. Default: server.host (127.0.0.1).")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Listen port. Default: server.port (8080).")
def serve(config: str | None, data_dir: str | None, host: str | None, port: int | None) -> None:
    """Run the HTTP service (OpenAI-compatible paired completions and the routing API)."""
    from router.logging import configure_logging
    from router.service import run_server

    if host is not None and not host.strip():  # '' would listen on every interface
        raise click.BadParameter("is empty (0.0.0.0 listens on every interface)",
                                 param_hint="--host")
    settings = resolve_settings(config, data_dir)
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        server = settings.server.model_copy(update=overrides)
        settings = settings.model_copy(update={"server": server})
    configure_logging(settings.server.log_format, settings.server.log_level)
    run_server(settings)


@cli.command("diff")
@config_option
@data_dir_option
@click.argument("model_names", nargs=-1, metavar="A B")
@click.option("--all", "whole_pool", is_flag=True,
              help="The pairwise similarity matrix of every profiled pool model instead.")
@click.option("--domain", default=None, help="Only this domain of the suite.")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text",
              show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the report to this file instead of stdout.")
@click.option("--suite", default="default", show_default=True,
              help="The suite the profiles were built on (a shipped name or a .jsonl file).")
@click.option("--samples", type=click.IntRange(2, 100), default=PROFILE_SAMPLES,
              show_default=True, help="Samples per probe the profiles were built with (k).")
@click.option("--temperature", type=Temperature(), default=0.7, show_default=True,
              help="Temperature the profiles were built with.")
def diff(config: str | None, data_dir: str | None, model_names: tuple[str, ...],
         whole_pool: bool, domain: str | None, fmt: str, out: str | None, suite: str,
         samples: int, temperature: float) -> None:
    """The behavioral diff of models A and B: where they differ beyond their own noise."""
    from router.profiling.sources import ProfileQuery

    settings = resolve_settings(config, data_dir)
    query = ProfileQuery(suite, samples, temperature)
    if whole_pool:
        report = _matrix_report(settings, query, model_names, domain, fmt)
    else:
        report = _diff_report(settings, query, model_names, domain, fmt, color=out is None)
    if out is None:
        click.echo(report, nl=False)
    else:
        from profiles.files import write_atomically

        target = Path(out)
        try:  # whole or not at all: a full disk truncated the previous report in place
            if not target.parent.is_dir():  # as before: --out creates no directory
                raise FileNotFoundError(errno.ENOENT, f"no directory {target.parent}")
            write_atomically(target, report.encode("utf-8"))
        except OSError as exc:
            raise DiffrouteError(f"cannot write {out}: {exc.strerror or exc}") from None
        _say(f"diffroute: wrote {out}")


def _diff_report(settings: Settings, query: ProfileQuery, names: tuple[str, ...],
                 domain: str | None, fmt: str, color: bool) -> str:
    from profiles.report import render_html, render_json, render_text
    from router.profiling.sources import diff_models

    if len(names) != 2:
        raise click.UsageError("give two models (diffroute diff A B), or --all for the pool")
    result = diff_models(settings, names[0], names[1], query, domain)
    if fmt == "json":
        return render_json(result)
    if fmt == "html":
        return render_html(result)
    return render_text(result, color=color and _stdout_wants_color())


def _matrix_report(settings: Settings, query: ProfileQuery, names: tuple[str, ...],
                   domain: str | None, fmt: str) -> str:
    from profiles.report import render_matrix_json, render_matrix_text
    from router.profiling.sources import pool_similarity

    if names:
        raise click.UsageError("--all takes no model names")
    if fmt == "html":
        raise click.UsageError("--all supports --format text or json")
    matrix, missing = pool_similarity(settings, query, domain)
    for name in missing:
        _say(f"diffroute: warning: no profile for model {name}, left out")
    if fmt == "json":
        return render_matrix_json(matrix, domain)
    return render_matrix_text(matrix, domain or "all")


def _stdout_wants_color() -> bool:
    """Colour on a terminal, never when piped or when ``NO_COLOR`` is set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


@cli.command("pairs")
@config_option
@data_dir_option
@click.option("--role", type=click.Choice(["assist", "audit"]), default=None,
              help="Only this role (default: both).")
@click.option("--task", default="", help="A task text: its nearest probes set the domains.")
@click.option("--domain", default=None, help="Use this domain of the suite instead of a task.")
@click.option("--panel", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Audit panels of K auditors, with their effective number of votes.")
@click.option("--primary", default=None, help="Only this primary ('auto': let the policy pick).")
@click.option("--all", "whole_pool", is_flag=True,
              help="Pool-wide assignment: a matching on the similarity graph.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def pairs(config: str | None, data_dir: str | None, role: str | None, task: str,
          domain: str | None, panel: int, primary: str | None, whole_pool: bool,
          fmt: str) -> None:
    """The pairs the policy would choose, with scores and reasons (calls no model)."""
    from router.pairing.decider import build_decider
    from router.pairing.pinned import read_pairings
    from router.pairing.policy import audit_price, audit_price_text
    from router.pool import Pool
    from router.store import read_pairings_document

    settings = resolve_settings(config, data_dir)
    if primary not in (None, "auto"):
        settings.model(primary)
    if whole_pool and (primary or panel > 1):
        raise click.UsageError("--all takes neither --primary nor --panel")
    if panel > 1 and role == "assist":
        raise click.UsageError("--panel picks auditors: it takes --role audit (or no --role)")
    try:
        stored = read_pairings(run(read_pairings_document(settings)))
    except ValueError as exc:  # pydantic's ValidationError too
        first = str(exc).splitlines()[1:3] if "validation error" in str(exc) else [str(exc)]
        raise StartupError(f"the stored pairings ({settings.store.kind} store of "
                           f"{settings.data_dir}) cannot be read: {' '.join(first).strip()}; "
                           "fix or remove them (PUT /v1/pairings replaces them)") from None
    decider = build_decider(settings, Pool(settings), stored)
    roles: list[Any] = [role] if role else ["assist", "audit"]
    if panel > 1:
        roles = ["audit"]
    rows = [_pair_rows(decider, r, task, domain, panel, primary, whole_pool) for r in roles]
    flat = [row for group in rows for row in group]
    price = audit_price(decider.tables) if "audit" in roles else None
    if fmt == "json":
        click.echo(json.dumps({"profile_version": decider.version,
                               "unprofiled": decider.unprofiled,
                               **({"audit_price": price} if price else {}),
                               "decisions": flat}, indent=2))
    else:
        _print_pairs(flat, decider.version, decider.unprofiled)
        if price:
            click.echo(audit_price_text(decider.tables))


def _pair_rows(decider: Any, role: Any, task: str, domain: str | None, panel: int,
               primary: str | None, whole_pool: bool) -> list[dict[str, Any]]:
    """Decisions as JSON rows; a model without a partner is a row with an ``error``."""
    from router.errors import NoPairError
    from router.pairing.decision import RouteRequest

    if whole_pool:
        rows = [d.to_json() for d in decider.assignment(role, task, domain)]
        done = {r["primary"] for r in rows}
        for name in decider.tables.models:  # left without a partner: a row, as below
            if name not in done:
                rows.append({"primary": name, "role": role, "partner": None, "score": None,
                             "reason": "no partner in the pool-wide assignment",
                             "error": "no_pair"})
        return rows
    names = [primary] if primary else list(decider.tables.models)
    out = []
    for name in names:
        request = RouteRequest(role=role, primary=None if name == "auto" else name, task=task,
                               domain=domain, panel=panel)
        try:
            out.append(decider.decide(request).to_json())
        except NoPairError as exc:
            if primary:  # asked for one decision: its failure is the command's
                raise
            out.append({"primary": name, "role": role, "partner": None, "score": None,
                        "reason": exc.reason, "error": "no_pair"})
    return out


def _print_pairs(rows: list[dict[str, Any]], version: str, unprofiled: list[str]) -> None:
    click.echo(f"profile version {version or '-'}"
               + (f"; unprofiled: {', '.join(unprofiled)}" if unprofiled else ""))
    if rows and rows[0].get("domains"):
        click.echo("domains: " + ", ".join(f"{d} {w:.2f}" for d, w in rows[0]["domains"].items()))
    width = max([len(str(r["primary"])) for r in rows] + [7])
    pwidth = max([len(", ".join(r.get("panel") or []) or str(r["partner"])) for r in rows] + [7])
    for r in rows:
        partner = ", ".join(r.get("panel") or []) or (r["partner"] or "-")
        score = "-" if r["score"] is None else f"{r['score']:+.3f}"
        votes = f" N_eff {r['effective_votes']:.2f}" if r.get("effective_votes") else ""
        click.echo(f"{r['role']:<6}  {r['primary']:<{width}} -> {partner:<{pwidth}}  "
                   f"score {score:>6}{votes}  {r['reason']}")


# --- live diffs and drift ----------------------------------------------------------------------

url_option = click.option(
    "--url", default=None,
    help="A running service (e.g. http://127.0.0.1:8080 or its /v1 URL; its API key from "
         "$DIFFROUTE_API_KEY); default: read the data dir.")
FETCH_TIMEOUT_S = 30.0
"""How long ``--url`` waits for the service's answer."""


def parse_since(value: str | None) -> float | None:
    """``90s``/``10m``/``2h``/``1d`` ago, epoch seconds, or ISO 8601 → epoch seconds."""
    import time

    from router.store import parse_time

    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    try:
        return parse_time(value, "since")
    except DiffrouteError:
        raise click.BadParameter(f"'{value}' is not a time: give 90s, 10m, 2h or 1d (ago), "
                                 "epoch seconds, or ISO 8601", param_hint="--since") from None


def _fetch(url: str, path: str, params: dict[str, str]) -> Any:
    """``GET url + path`` on a running service, with ``$DIFFROUTE_API_KEY`` as its Bearer key;
    anything but its JSON answer is one line naming the URL."""
    import aiohttp
    from yarl import URL

    if not url.startswith(("http://", "https://")):
        raise click.BadParameter(f"'{url}' is not an http:// or https:// URL",
                                 param_hint="--url")
    try:  # it was "http:/v1/diffs: http:///v1/diffs", exit 1
        host = URL(url).host
    except ValueError as exc:  # "Invalid IPv6 URL", "Port out of range 0-65535"
        raise click.BadParameter(f"'{url}': {exc}", param_hint="--url") from None
    if not host:
        raise click.BadParameter(f"'{url}' names no host", param_hint="--url")
    key = os.environ.get("DIFFROUTE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    # the start-up line's `url` (and an OpenAI client's base_url) ends in /v1: the same service
    where = url.rstrip("/").removesuffix("/v1") + path

    async def get() -> Any:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
                where, params=params, headers=headers) as resp:
            try:
                body = await resp.json(content_type=None)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                raise DiffrouteError(f"{where}: HTTP {resp.status}, not a diffroute answer "
                                     "(is --url a diffroute service?)")
            if resp.status != 200:
                error = body.get("error")
                message = error.get("message") if isinstance(error, dict) else None
                hint = " (set DIFFROUTE_API_KEY)" if resp.status == 401 and not key else ""
                raise DiffrouteError(f"{where}: HTTP {resp.status}: "
                                     f"{message or 'no error message'}{hint}")
            if not isinstance(body.get("data"), list):
                raise DiffrouteError(f"{where}: the answer has no 'data' list "
                                     "(is --url a diffroute service?)")
            return body

    try:
        return run(get())
    except TimeoutError:
        raise DiffrouteError(f"{where}: no answer within {FETCH_TIMEOUT_S:g} s") from None
    except aiohttp.ClientError as exc:
        raise DiffrouteError(f"{where}: {' '.join(str(exc).split()) or type(exc).__name__}"
                             ) from None


async def _read_store(config: str | None, data_dir: str | None,
                      read: Callable[[Any], Awaitable[T]]) -> T:
    """``read(store)`` on the configured store, opened for reading only."""
    from router.store import open_store

    async with open_store(resolve_settings(config, data_dir), write=False) as store:
        return await read(store)


@cli.command()
@config_option
@data_dir_option
@url_option
@click.option("--pair", default=None, help="PRIMARY,PARTNER")
@click.option("--since", default=None, help="10m, 2h, 1d, epoch seconds or ISO 8601.")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
def diffs(config: str | None, data_dir: str | None, url: str | None, pair: str | None,
          since: str | None, limit: int, fmt: str) -> None:
    """List live diffs (from a running service or the data dir), oldest first."""
    import json

    since_ts = parse_since(since)
    if url:
        params = {"limit": str(limit)} | ({"pair": pair} if pair else {})
        if since_ts is not None:
            params["since"] = str(since_ts)
        rows = _live_diff_rows(_fetch(url, "/v1/diffs", params), url)
    else:
        rows = _local_diffs(config, data_dir, pair, since_ts, limit)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    from profiles.report.text import visible

    for row in rows:
        click.echo(f"{_when(row['created_at'])}  {row['id']}  {row['primary']} vs "
                   f"{row['partner']} ({row['role']}, {row['mode']})  "
                   f"{','.join(row['domains']) or '-'}  "
                   f"divergence {row['divergence']:.3f} > {row['threshold']:.3f}")
        if row.get("unified_diff"):
            # the answers of models: their control characters (ESC sequences that clear the
            # screen or set the title, carriage returns) are shown, never sent to the terminal
            click.echo("    " + visible(row["unified_diff"].rstrip("\n")).replace("\n", "\n    "))


LIVE_DIFF_FIELDS = ("created_at", "id", "primary", "partner", "role", "mode", "domains",
                    "divergence", "threshold")


def _live_diff_rows(payload: Any, url: str) -> list[dict[str, Any]]:
    """The live diffs of a ``GET /v1/diffs`` answer; another service's answer is one line
    naming the URL (it was "'created_at' (KeyError)")."""
    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or not all(
            isinstance(r, dict) and all(f in r for f in LIVE_DIFF_FIELDS) for r in rows):
        raise click.ClickException(f"{url} did not answer with diffroute's live diffs "
                                   "(is it a diffroute service?)")
    return rows


def _local_diffs(config: str | None, data_dir: str | None, pair: str | None,
                 since: float | None, limit: int) -> list[dict[str, Any]]:
    from router.store import DiffQuery

    primary = partner = None
    if pair:
        names = [n.strip() for n in pair.split(",")]
        if len(names) != 2 or not all(names):  # "A," named no partner: it matched nothing
            raise click.UsageError("--pair takes two models: A,B")
        primary, partner = names
    query = DiffQuery(primary, partner, since=since, limit=limit)
    rows: list[dict[str, Any]] = run(_read_store(config, data_dir,
                                                 lambda store: store.diffs(query)))
    return rows


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@cli.command()
@config_option
@data_dir_option
@url_option
def drift(config: str | None, data_dir: str | None, url: str | None) -> None:
    """Drift alarms: one line per event (and, with --url, each pair's current state)."""
    if url:
        body = _fetch(url, "/v1/drift", {})
        events, states = body["data"], body["states"]
    else:
        events = run(_read_store(config, data_dir, lambda store: store.drift_events()))
        states = []
    for e in events:
        click.echo(f"{_when(e['at'])}  DRIFT {e['direction']:<4} {e['primary_model']} vs "
                   f"{e['partner']} in {e['domain']}: disagreement {e['observed']:.3f} "
                   f"(expected {e['expected']:.3f}) after {e['comparisons']} comparisons")
    for s in states:
        click.echo(f"state  {s['primary']} vs {s['partner']} in {s['domain']}: {s['state']} "
                   f"({s['comparisons']} comparisons, statistic {s['statistic']})")
    if not events and not states:
        click.echo("no drift recorded")


@cli.group()
def store() -> None:
    """The store's schema: what `store:` names (SQLite in the data dir, or PostgreSQL)."""


@store.command("migrate")
@config_option
@data_dir_option
def store_migrate(config: str | None, data_dir: str | None) -> None:
    """Apply the missing schema migrations (safe while other instances start or run)."""
    from router.store import schema_state

    state = run(schema_state(resolve_settings(config, data_dir), migrate=True))
    click.echo(state.describe())


@store.command("check")
@config_option
@data_dir_option
def store_check(config: str | None, data_dir: str | None) -> None:
    """Reach the store and compare its schema with this diffroute's; exit 1 unless equal."""
    from router.store import schema_state

    state = run(schema_state(resolve_settings(config, data_dir), migrate=False))
    click.echo(state.describe())
    if not state.ok:
        sys.exit(1)
