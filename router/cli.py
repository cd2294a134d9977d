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
from typing import Any, TypeVar

import click

from router.config import Settings, load_settings
from router.errors import ConfigError, DiffrouteError

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
