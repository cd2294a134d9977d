"""Small helpers shared by the benchmarks: statistics, ratios, a load generator, servers.

* :func:`percentile`, :func:`ratio`, :func:`print_table`: figures and how they are printed.
* :func:`run_load`: a closed-loop load generator (``concurrency`` workers, bounded by a request
  count and a duration) around any ``send()`` coroutine; it returns a :class:`LoadResult`.
* :func:`spawn_server` / :func:`announce` / :func:`wait_for_termination`: a server runs in a
  child process, prints ``LISTENING <url>`` on stdout once it accepts connections, and stops on
  SIGTERM; the parent reads the url and terminates it when done.
* :func:`serve_app`: the child side for an aiohttp ``web.Application`` (127.0.0.1, port 0).
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

READY = "LISTENING"
"""The first word of the line a child server prints on stdout once it listens."""


# --- figures ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return percentile(values, 50)


def median_interval(values: Sequence[float], confidence: float = 0.9
                    ) -> tuple[float, float, float]:
    """A distribution-free interval for the median: ``(low, high, coverage)``.

    The order statistics ``x(k)`` and ``x(n+1-k)`` bracket the true median with probability
    ``1 - 2·P(Binomial(n, ½) < k)``, whatever the distribution (the sign test's interval); ``k``
    is the largest whose coverage is at least ``confidence``, else 1 (the range). With 5 values
    that is the range at 94 %, with 9 the 2nd and 8th values at 96 %. NaN for no values.
    """
    ordered = sorted(v for v in values if not math.isnan(v))
    n = len(ordered)
    if not n:
        return math.nan, math.nan, math.nan

    def coverage(k: int) -> float:
        return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / (1 << n)

    k = 1
    while k + 1 <= (n + 1) // 2 and coverage(k + 1) >= confidence:
        k += 1
    return ordered[k - 1], ordered[n - k], coverage(k)


def ratio(subject: float, baseline: float, digits: int = 2) -> str:
    """``subject / baseline`` as ``0.93×`` (``n/a`` when the baseline is zero or missing)."""
    if not baseline or math.isnan(baseline) or math.isnan(subject):
        return "n/a"
    return f"{subject / baseline:.{digits}f}×"


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain, aligned text table (first column left-aligned, the others right-aligned)."""
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


# --- load ------------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What one load run measured; latencies in seconds, of successful requests only."""

    concurrency: int
    elapsed_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def throughput(self) -> float:
        """Successful requests per second."""
        return self.ok / self.elapsed_s if self.elapsed_s else math.nan

    def latency_ms(self, q: float) -> float:
        return percentile(self.latencies, q) * 1000


Send = Callable[[], Awaitable[None]]
"""Performs one request; raises when it failed."""


async def run_load(send: Send, *, concurrency: int, duration_s: float,
                   max_requests: int) -> LoadResult:
    """Closed loop: ``concurrency`` workers send back to back until the time or count is up."""
    result = LoadResult(concurrency)
    issued = 0
    deadline = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal issued
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            started = time.perf_counter()
            try:
                await send()
            except Exception as exc:  # a failed request is counted, not fatal to the run
                result.errors += 1
                result.first_error = result.first_error or repr(exc)
                continue
            result.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed_s = time.perf_counter() - started
    return result


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux ``/proc``; NaN elsewhere).

    On a shared machine this is steadier than throughput: it does not count time spent
    waiting for a core.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return math.nan
    # after the command name: state is field 3, utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- servers in child processes --------------------------------------------------------------


@dataclass
class ServerProcess:
    """A running child server."""

    process: asyncio.subprocess.Process
    url: str


@asynccontextmanager
async def spawn_server(argv: Sequence[str], *, cwd: Path | None = None,
                       env: Mapping[str, str] | None = None,
                       start_timeout_s: float = 60.0) -> AsyncIterator[ServerProcess]:
    """Run ``python <argv>`` (in ``cwd``, with ``env``: default this process's) until it
    prints ``LISTENING <url>``; SIGTERM it on exit.

    The child's stderr goes to a temporary file (its logs cost what they cost, but never fill a
    pipe); it is shown when the child fails to start.
    """
    with tempfile.TemporaryFile() as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *argv, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
            stderr=stderr)
        try:
            url = await _read_url(process, start_timeout_s)
        except BaseException:
            await _stop(process)
            stderr.seek(0)
            sys.stderr.write(stderr.read()[-4000:].decode(errors="replace"))
            raise
        try:
            yield ServerProcess(process, url)
        finally:
            await _stop(process)


async def _read_url(process: asyncio.subprocess.Process, timeout_s: float) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        while line := (await process.stdout.readline()).decode():
            word, _, url = line.strip().partition(" ")
            if word == READY:
                return url
    raise RuntimeError(f"server {process.pid} exited before listening")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


def announce(url: str) -> None:
    """Child side: tell the parent where the server listens."""
    print(f"{READY} {url}", flush=True)


async def wait_for_termination() -> None:
    """Child side: return on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def serve_app(app: web.Application, *, shutdown_timeout: float = 1.0,
                    handler_cancellation: bool = False) -> None:
    """Child side: serve ``app`` on 127.0.0.1 (port 0), announce it, stop on SIGTERM;
    ``handler_cancellation`` as ``diffroute serve`` runs (a task per request)."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                           handler_cancellation=handler_cancellation)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    announce(f"http://127.0.0.1:{runner.addresses[0][1]}")
    try:
        await wait_for_termination()
    finally:
        await runner.cleanup()
