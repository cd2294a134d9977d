"""``wrk`` as the load generator: POST bodies through a Lua script, figures parsed from its report.

A Python load generator is the bottleneck of an HTTP benchmark before a fast server is: one
``aiohttp.ClientSession`` capped the hello-world baseline of ``benchmarks/service.py`` at
≈ 7,800 req/s while the same handler serves 20,000+ under ``wrk``. So the benchmarks drive their
servers with ``wrk`` (C, epoll, one thread per ``-t``) when it is installed:

* :func:`find_wrk`: the ``wrk`` executable on ``PATH`` (``None`` when absent: the caller falls
  back to its Python generator and says so);
* :func:`lua_script`: the script for one body (``wrk.body``) or for a new body per request
  (``request()`` formats each one; a salt and a counter make every task text new);
* :func:`run_wrk`: one run, ``wrk -t<threads> -c<connections> -d<s> --latency --timeout``, on a
  given CPU set (``taskset``) when asked; it returns a :class:`WrkResult` with ``Requests/sec``,
  the latency percentiles of ``--latency`` (50/75/90/99 %), the error counts, and the CPU
  seconds ``wrk`` itself used (``RUSAGE_CHILDREN`` around the run), so a report can show that
  ``wrk`` was not the bottleneck.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 10
"""``wrk --timeout``: a response slower than this counts as an error (wrk's default is 2 s)."""


def find_wrk() -> str | None:
    """The path of ``wrk``, or ``None`` when it is not installed."""
    return shutil.which("wrk")


def wrk_version(wrk: str) -> str:
    """``wrk 4.1.0 [epoll]``-like first line of ``wrk -v`` (it exits non-zero by design)."""
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).splitlines()[:1]
    return first[0].split(" Copyright")[0] if first else "wrk"


def _lua_string(text: str) -> str:
    """``text`` as a Lua long-bracket literal whose level no ``]=…=]`` in ``text`` closes."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def lua_script(body: bytes, *, distinct: tuple[str, str] | None = None) -> str:
    """A wrk script that POSTs ``body`` as JSON.

    With ``distinct = (prefix, suffix)`` every request's body is
    ``prefix + "<salt>-<n>" + suffix`` instead (a new ``n`` per request, a new salt per run).
    """
    if distinct is None:
        return ('wrk.method = "POST"\n'
                f"wrk.body = {_lua_string(body.decode())}\n"
                'wrk.headers["Content-Type"] = "application/json"\n')
    prefix, suffix = distinct
    return (f'local salt = "{os.urandom(4).hex()}"\n'
            "local n = 0\n"
            'local headers = {["Content-Type"] = "application/json"}\n'
            "request = function()\n"
            "  n = n + 1\n"
            f"  local body = {_lua_string(prefix)} .. salt .. \"-\" .. n .. {_lua_string(suffix)}\n"
            '  return wrk.format("POST", nil, headers, body)\n'
            "end\n")


@dataclass(frozen=True)
class WrkResult:
    """One ``wrk`` run: its report's figures and its own CPU use."""

    requests: int
    elapsed_s: float
    throughput: float
    """``Requests/sec``: every completed response, whatever its status."""
    latency_ms: dict[int, float]
    """Percentile (50, 75, 90, 99) → milliseconds."""
    non_2xx: int
    socket_errors: int
    cpu_s: float
    """User + system CPU seconds of the ``wrk`` process."""

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def ok(self) -> int:
        return max(self.requests - self.non_2xx, 0)

    @property
    def cpu_share(self) -> float:
        """``wrk``'s CPU time over the run's wall time: 1.0 is one core busy all along."""
        return self.cpu_s / self.elapsed_s if self.elapsed_s else math.nan


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _duration_ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)([a-z]+)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def parse_report(report: str, cpu_s: float = math.nan) -> WrkResult:
    """The figures of ``wrk --latency``'s text report."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", report)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", report)
    if done is None or rate is None:
        raise RuntimeError(f"not a wrk report:\n{report}")
    percentiles = {int(q): _duration_ms(v) for q, v in
                   re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+[a-z]+)\s*$", report, re.M)}
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", report)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                        report)
    return WrkResult(
        requests=int(done.group(1)),
        elapsed_s=_duration_ms(done.group(2) + done.group(3)) / 1000,
        throughput=float(rate.group(1)),
        latency_ms=percentiles,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(map(int, sockets.groups())) if sockets else 0,
        cpu_s=cpu_s)


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def run_wrk(wrk: str, url: str, script: str, *, connections: int, duration_s: float,
                  threads: int = 1, cpus: Sequence[int] | None = None) -> WrkResult:
    """Run ``wrk`` once against ``url`` with ``script``; pinned to ``cpus`` when given.

    Its CPU time is the growth of this process's reaped-children usage over the run: the
    servers are children too, but they are not reaped until the benchmark ends.
    """
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "post.lua"
        path.write_text(script)
        argv = [wrk, f"-t{threads}", f"-c{connections}", f"-d{max(round(duration_s), 1)}s",
                "--latency", f"--timeout={TIMEOUT_S}s", "-s", str(path), url]
        if cpus:
            argv = ["taskset", "-c", ",".join(map(str, cpus)), *argv]
        cpu_before = _children_cpu_s()
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output, _ = await process.communicate()
        cpu_s = _children_cpu_s() - cpu_before
    report = output.decode(errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {report}")
    return parse_report(report, cpu_s)
