"""The ``diffroute`` command line. Argument parsing lives here and nowhere else.

Every command turns a :class:`router.errors.DiffrouteError` (and bad input in general) into one
line on stderr and a non-zero exit: 2 for usage and configuration errors, 1 for the rest.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from router.config import Settings, load_settings
from router.errors import ConfigError, DiffrouteError

if TYPE_CHECKING:  # the diff machinery loads numpy; the CLI imports it only when used
    from router.diffing import ProfileQuery

T = TypeVar("T")


def resolve_settings(config: str | None, data_dir: str | None = None) -> Settings:
    """The pool file given (or ``$DIFFROUTE_CONFIG``), else the embedded default pool."""
    path = config or os.environ.get("DIFFROUTE_CONFIG")
    if path:
        settings = load_settings(path)
    else:
        from router.defaults import default_settings

        settings = default_settings()
    if data_dir:
        settings = settings.model_copy(update={"data_dir": Path(data_dir)})
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def fail(message: str, code: int = 1) -> None:
    click.echo(f"diffroute: error: {message}", err=True)
    sys.exit(code)


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
        click.echo(f"{row.name:<{width}}  {row.kind:<9} {row.family:<10} {row.status.state}{detail}")
    if not all(r.status.ok for r in rows):
        sys.exit(1)


@cli.command()
@config_option
@data_dir_option
@click.option("--max-tokens", type=click.IntRange(1, 4096), default=128, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True)
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

    click.echo(run(one()).strip())


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    try:
        cli.main(args=argv, prog_name="diffroute", standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 130)
    except click.ClickException as exc:
        click.echo(f"diffroute: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        where = f"{exc.source}: " if exc.source else ""
        for problem in exc.problems:
            click.echo(f"diffroute: error: {where}{problem}", err=True)
        sys.exit(2)
    except DiffrouteError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except OSError as exc:
        fail(str(exc))


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
@click.option("--samples", type=click.IntRange(1, 100), default=5, show_default=True,
              help="Samples per probe (k): the noise floor needs k >= 2.")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 256), default=4, show_default=True,
              help="Requests in flight per model (the model's max_concurrency still applies).")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), default=None,
              help="Also write each profile as compact JSON into this directory.")
def profile_build(config: str | None, data_dir: str | None, suite: str, model_names: str | None,
                  samples: int, temperature: float, concurrency: int,
                  export_dir: str | None) -> None:
    """Collect observations (cached and resumable), then print each model's summary."""
    from router.profiling import build_profiles

    settings = resolve_settings(config, data_dir)
    names = _split_models(model_names, settings)
    summaries = run(build_profiles(settings, suite, names, samples, temperature, concurrency,
                                   Path(export_dir) if export_dir else None))
    _print_summaries(summaries)
    if any(s.get("failures") for s in summaries):
        sys.exit(1)


@profile.command("show")
@config_option
@data_dir_option
@click.option("--suite", default="default", show_default=True)
@click.option("--models", "model_names", default=None)
@click.option("--samples", type=click.IntRange(1, 100), default=5, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True)
def profile_show(config: str | None, data_dir: str | None, suite: str, model_names: str | None,
                 samples: int, temperature: float) -> None:
    """Summarise stored profiles without calling any model."""
    from router.profiling import summarize_profiles

    settings = resolve_settings(config, data_dir)
    names = _split_models(model_names, settings)
    _print_summaries(summarize_profiles(settings, suite, names, samples, temperature))


def _split_models(value: str | None, settings: Settings) -> list[str]:
    if not value:
        return [m.name for m in settings.models]
    names = [n.strip() for n in value.split(",") if n.strip()]
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
        for model, probe, error in s.get("failures", [])[:5]:
            click.echo(f"diffroute: warning: {model} {probe}: {error}", err=True)


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

    settings = resolve_settings(config, data_dir)
    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if overrides:
        server = settings.server.model_copy(update=overrides)
        settings = settings.model_copy(update={"server": server})
    configure_logging(settings.server.log_format)
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
@click.option("--samples", type=click.IntRange(2, 100), default=5, show_default=True,
              help="Samples per probe the profiles were built with (k).")
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.7, show_default=True,
              help="Temperature the profiles were built with.")
def diff(config: str | None, data_dir: str | None, model_names: tuple[str, ...],
         whole_pool: bool, domain: str | None, fmt: str, out: str | None, suite: str,
         samples: int, temperature: float) -> None:
    """The behavioral diff of models A and B: where they differ beyond their own noise."""
    from router.diffing import ProfileQuery

    settings = resolve_settings(config, data_dir)
    query = ProfileQuery(suite, samples, temperature)
    if whole_pool:
        report = _matrix_report(settings, query, model_names, domain, fmt)
    else:
        report = _diff_report(settings, query, model_names, domain, fmt, color=out is None)
    if out is None:
        click.echo(report, nl=False)
    else:
        Path(out).write_text(report, encoding="utf-8")
        click.echo(f"diffroute: wrote {out}", err=True)


def _diff_report(settings: Settings, query: ProfileQuery, names: tuple[str, ...],
                 domain: str | None, fmt: str, color: bool) -> str:
    from profiles.report import render_html, render_json, render_text
    from router.diffing import diff_models

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
    from router.diffing import pool_similarity

    if names:
        raise click.UsageError("--all takes no model names")
    if fmt == "html":
        raise click.UsageError("--all supports --format text or json")
    matrix, missing = pool_similarity(settings, query, domain)
    for name in missing:
        click.echo(f"diffroute: warning: no profile for model {name}, left out", err=True)
    if fmt == "json":
        return render_matrix_json(matrix, domain)
    return render_matrix_text(matrix, domain or "all")


def _stdout_wants_color() -> bool:
    """Colour on a terminal, never when piped or when ``NO_COLOR`` is set (no-color.org)."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")
