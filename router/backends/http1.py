"""A keep-alive HTTP/1.1 client for the calls every model call makes.

Every plain call diffroute proxies, and each side of a paired call, is one ``POST`` of a small
JSON body to an OpenAI-compatible server, answered by one JSON body or a stream of server-sent
events. aiohttp's ``ClientSession`` does that with a request object, a response object, a
stream reader, a payload writer and a timer reset on every read: about three times the CPU of
the whole exchange here (``benchmarks/README.md``, "the upstream client"), and the plain proxy
is that exchange plus a little. This client does the one thing:

* one pool of idle connections per origin (scheme, host, port), reused while the server keeps
  them alive (HTTP/1.1 keep-alive; ``Connection: close`` is honoured) and for at most
  :data:`KEEPALIVE_S` of idleness;
* the request written in one ``transport.write``; the response parsed by ``httptools`` (llhttp,
  the parser of Node.js): a body by ``Content-Length``, chunked, or until the server closes;
  ``gzip``/``deflate`` decoded; 1xx interim responses skipped;
* the body whole (:meth:`Http1Client.post` → :class:`HttpReply`) or as it arrives
  (:meth:`Http1Client.open` → :class:`HttpStream`: chunks or lines, the connection paused
  while the reader is more than :data:`STREAM_HIGH_WATER` bytes behind);
* TLS through :mod:`ssl` (system trust store unless given a context);
* three timeouts, as :class:`router.config.Timeouts` defines them: ``connect`` (TCP and TLS
  handshake), ``read`` (the longest silence while a response is awaited or arrives) and
  ``total`` (the whole exchange, a stream's body included). One timer per exchange: arriving
  data only records the time, and the timer, when it fires, re-arms itself for what is left;
* a connection that the server closed while it sat idle (its keep-alive timeout) and that
  fails before a single byte of the answer is retried once on a new connection — usually the
  request never reached a handler (a server that reads a request and closes without a word
  gets it twice: the price of surviving the keep-alive race, as browsers and urllib3 pay it);
* a response head (status line, headers, interim answers) past :data:`MAX_HEAD_BYTES` is an
  error, as a body past :data:`MAX_RESPONSE_BYTES` is;
* HTTP proxies (:class:`ProxySettings`, from ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY``/
  ``NO_PROXY`` unless given): an ``https://`` target through a ``CONNECT`` tunnel, TLS to the
  target inside it; an ``http://`` target by absolute-form requests (``POST http://host/path``,
  as curl does) to the proxy. The proxy is chosen once per origin, so the pool of an origin is
  the pool of (proxy, origin) and its connections, tunnels included, are kept alive the same
  way; a client without proxies pays nothing for them;
* errors as plain exceptions, which the backend translates: :class:`TimeoutError`,
  :class:`ConnectionError` (refused, reset, closed early; :class:`ProxyError` when the proxy
  cannot be reached or refuses) and :class:`HttpProtocolError` (malformed or truncated
  responses, oversized bodies and lines).

Not supported: ``https://`` and SOCKS proxies (a :class:`ProxyError` for the requests they
would carry), proxy authentication other than Basic, HTTP/2, request bodies streamed from the
caller.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import httptools
from yarl import URL

from router.backends.proxies import Proxy, ProxySettings

MAX_RESPONSE_BYTES = 64 * 1024 * 1024
"""A response body larger than this is an error, not a memory exhaustion."""
MAX_LINE_BYTES = 1024 * 1024
"""The longest line :meth:`HttpStream.lines` accepts (a server-sent event's ``data:`` line)."""
STREAM_HIGH_WATER = 1024 * 1024
"""Bytes of a streamed body buffered for its reader before the connection stops reading."""
STREAM_LOW_WATER = 256 * 1024
"""…and starts again when the reader has brought the buffer below this."""
MAX_IDLE_PER_ORIGIN = 256
"""Idle connections kept per origin; more are closed when released."""
KEEPALIVE_S = 15.0
"""An idle connection older than this is closed rather than reused (aiohttp's default too): a
middlebox may have dropped it silently, and a request on it would wait for ``timeouts.read``."""
MAX_PROXY_HEAD_BYTES = 64 * 1024
"""The longest answer head a proxy may send to ``CONNECT``."""
MAX_HEAD_BYTES = 256 * 1024
"""Bytes a response may take before its headers end (status line, headers, interim 1xx
answers): an endless head is an error, not a memory exhaustion."""


class HttpProtocolError(ValueError):
    """The server's answer is not a well-formed HTTP/1.1 response (or is too large)."""


class ProxyError(ConnectionError):
    """The proxy could not be reached, refused the tunnel or asked for credentials (``407``)."""


class _StaleConnection(ConnectionError):
    """A reused connection closed before any byte of the answer: safe to send again."""


@dataclass(frozen=True, slots=True)
class HttpTimeouts:
    """Seconds (see the module doc)."""

    connect: float
    read: float
    total: float


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One response: status, reason phrase, headers (lower-case names) and the whole body."""

    status: int
    reason: str
    raw_headers: tuple[tuple[bytes, bytes], ...]
    body: bytes

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased; a repeated header keeps its last value."""
        return _header_dict(self.raw_headers)


def _header_dict(raw: tuple[tuple[bytes, bytes], ...]) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw}


def encode_headers(headers: Mapping[str, str]) -> bytes:
    """``Name: value\\r\\n`` lines; a line break in a name or value is refused (it would let a
    configured header or a key from the environment inject headers or a second request)."""
    lines = []
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"HTTP header {name!r} has a line break or an invalid name")
        lines.append(f"{name}: {value}\r\n")
    return "".join(lines).encode("latin-1")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A URL parsed once: its origin and the request line's target and ``Host``."""

    origin: tuple[str, str, int]
    target: bytes
    host_header: bytes
    server_hostname: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        parsed = URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ValueError(f"not an http(s) URL: {url!r}")
        host = parsed.raw_host
        port = parsed.port
        assert port is not None  # http and https have default ports
        shown = f"[{host}]" if ":" in host else host
        if parsed.explicit_port is not None:
            shown = f"{shown}:{parsed.explicit_port}"
        return cls((parsed.scheme, host, port), (parsed.raw_path_qs or "/").encode("ascii"),
                   shown.encode("idna" if not shown.isascii() else "ascii"), host)

    @property
    def authority(self) -> str:
        return self.host_header.decode("ascii", "replace")


# --- proxies ---------------------------------------------------------------------------------


class Http1Client:
    """Keep-alive connection pools, one per origin; close with :meth:`aclose`.

    ``proxies`` defaults to :meth:`ProxySettings.from_env`, read here, once;
    ``ProxySettings()`` is no proxy whatever the environment says."""

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None,
                 max_idle_per_origin: int = MAX_IDLE_PER_ORIGIN,
                 proxies: ProxySettings | None = None) -> None:
        self._ssl_context = ssl_context
        self._max_idle = max_idle_per_origin
        self.proxies = ProxySettings.from_env() if proxies is None else proxies
        self._origins: dict[tuple[str, str, int], _Origin] = {}
        self.closed = False

    def _origin(self, endpoint: Endpoint) -> _Origin:
        origin = self._origins.get(endpoint.origin)
        if origin is None:
            if self.closed:
                raise ConnectionError("the HTTP client is closed")
            context: ssl.SSLContext | None = None
            if endpoint.origin[0] == "https":
                context = self._ssl_context or ssl.create_default_context()
            proxy = self.proxies.proxy_for(*endpoint.origin)
            origin = self._origins[endpoint.origin] = _Origin(endpoint, context, self._max_idle,
                                                              proxy)
        return origin

    async def post(self, endpoint: Endpoint, headers: bytes, body: bytes,
                   timeouts: HttpTimeouts) -> HttpReply:
        """``POST`` ``body`` with ``headers`` (from :func:`encode_headers`; ``Host`` and
        ``Content-Length`` are added) and return the whole response, whatever its status."""
        reply = await self._exchange(b"POST", endpoint, headers, body, timeouts, stream=False)
        assert isinstance(reply, HttpReply)
        return reply

    async def open(self, method: str, endpoint: Endpoint, headers: bytes, body: bytes | None,
                   timeouts: HttpTimeouts) -> HttpStream:
        """Send a request and return once the response's head has arrived, whatever its status;
        its body is read from the :class:`HttpStream` as it comes (server-sent events). The
        caller must :meth:`HttpStream.close` it (a stream closed before its end closes its
        connection). ``read`` and ``total`` bound the body as well."""
        stream = await self._exchange(method.encode("ascii"), endpoint, headers, body, timeouts,
                                      stream=True)
        assert isinstance(stream, HttpStream)
        return stream

    async def _exchange(self, method: bytes, endpoint: Endpoint, headers: bytes,
                        body: bytes | None, timeouts: HttpTimeouts, *,
                        stream: bool) -> HttpReply | HttpStream:
        origin = self._origin(endpoint)
        length = b"" if body is None else b"Content-Length: %d\r\n" % len(body)
        forward = origin.forward
        if forward is None:
            data = b"%s %s HTTP/1.1\r\nHost: %s\r\n%s%s\r\n%s" % (
                method, endpoint.target, endpoint.host_header, headers, length, body or b"")
        else:  # absolute-form: the proxy reads the target from the request line
            data = b"%s http://%s%s HTTP/1.1\r\nHost: %s\r\n%s%s%s\r\n%s" % (
                method, endpoint.host_header, endpoint.target, endpoint.host_header,
                forward.authorization, headers, length, body or b"")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        for _ in range(2):
            connection = await origin.acquire(loop, min(timeouts.connect, timeouts.total))
            reused = connection.exchanges > 0
            try:
                answer = await connection.exchange(data, timeouts.read, deadline, stream=stream)
            except _StaleConnection:
                if not reused:
                    raise ConnectionError(
                        f"{origin.route} closed the connection without answering") from None
                continue
            except BaseException:  # cancelled or failed mid-exchange: the connection is spent
                connection.close()
                raise
            if forward is not None and answer.status == 407:  # the proxy's, not the target's
                if isinstance(answer, HttpStream):
                    answer.close()
                raise ProxyError(_refusal(forward, f"a request for {endpoint.authority}",
                                          answer.status, answer.reason))
            return answer
        raise ConnectionError(f"{origin.route} closed two connections without answering")

    def idle_connections(self, endpoint: Endpoint) -> int:
        """Connections to ``endpoint``'s origin waiting for a request (for tests and metrics)."""
        origin = self._origins.get(endpoint.origin)
        return 0 if origin is None else sum(1 for c in origin.idle if not c.closed)

    async def aclose(self) -> None:
        """Close every connection; later calls fail."""
        self.closed = True
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks


class _Origin:
    """The connections of one (scheme, host, port), direct or through one proxy."""

    def __init__(self, endpoint: Endpoint, context: ssl.SSLContext | None,
                 max_idle: int, proxy: Proxy | None) -> None:
        self.host = endpoint.origin[1]
        self.port = endpoint.origin[2]
        self.authority = endpoint.authority
        self.server_hostname = endpoint.server_hostname if context is not None else None
        self.ssl = context
        self.proxy = proxy
        # plain HTTP through a proxy: absolute-form requests on connections to the proxy
        self.forward = proxy if context is None else None
        self.route = self.authority if proxy is None else \
            f"{self.authority} through proxy {proxy.name}"
        self.max_idle = max_idle
        self.idle: collections.deque[_Connection] = collections.deque()
        self.live: set[_Connection] = set()
        self.closed = False

    def _prune(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close the idle connections kept too long, oldest first (they are appended as they
        are released, so the stale ones are at the left): the most recent one is taken for
        each request, so under light traffic after a burst the others were never looked at
        again and stayed open — a descriptor each — for as long as the upstream kept them."""
        idle = self.idle
        while idle and (idle[0].closed or idle[0].loop is not loop
                        or loop.time() - idle[0].idle_since >= KEEPALIVE_S):
            idle.popleft().close()

    async def acquire(self, loop: asyncio.AbstractEventLoop, connect_s: float) -> _Connection:
        idle = self.idle
        self._prune(loop)
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be stale
            if connection.closed:
                continue
            if connection.loop is loop and loop.time() - connection.idle_since < KEEPALIVE_S:
                return connection
            connection.close()  # kept too long, or of an event loop that is gone (asyncio.run)
        try:
            async with asyncio.timeout(connect_s):
                connection = await self._connect(loop)
        except TimeoutError:
            raise TimeoutError(f"connecting to {self.route} took longer than {connect_s:g} s "
                               "(timeouts.connect)") from None
        except ProxyError:
            raise
        except OSError as exc:  # refused, unreachable, unknown host, TLS failures
            raise ConnectionError(f"cannot connect to {self.route}: {exc}") from exc
        if self.closed:
            connection.close()
            raise ConnectionError("the HTTP client is closed")
        return connection

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> _Connection:
        proxy = self.proxy
        if proxy is None:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self.ssl,
                server_hostname=self.server_hostname)
            return connection
        if proxy.problem:
            raise ProxyError(f"cannot use {proxy.problem} (for {self.authority})")
        try:
            transport, protocol = await loop.create_connection(
                lambda: _Connection(self) if self.ssl is None else _ProxyHandshake(proxy),
                proxy.host, proxy.port)
        except OSError as exc:
            raise ProxyError(f"cannot connect to proxy {proxy.name} (for {self.authority}): "
                             f"{exc}") from exc
        if isinstance(protocol, _Connection):  # plain HTTP: requests go to the proxy
            return protocol
        assert isinstance(protocol, _ProxyHandshake) and self.ssl is not None
        try:
            return await self._tunnel(loop, transport, protocol, proxy, self.ssl)
        except BaseException:
            transport.close()
            raise

    async def _tunnel(self, loop: asyncio.AbstractEventLoop, transport: asyncio.Transport,
                      handshake: _ProxyHandshake, proxy: Proxy,
                      context: ssl.SSLContext) -> _Connection:
        """``CONNECT`` to the target, then TLS with the target inside the tunnel."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        target = f"{host}:{self.port}".encode("ascii")
        transport.write(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
            target, target, proxy.authorization))
        status, reason = await handshake.answer
        if not 200 <= status < 300:
            raise ProxyError(_refusal(proxy, f"CONNECT to {target.decode()}", status, reason))
        connection = _Connection(self)
        tls = await loop.start_tls(transport, connection, context,
                                   server_hostname=self.server_hostname)
        if tls is None:  # the transport closed during the handshake
            raise ConnectionError("the tunnel closed during the TLS handshake")
        connection.connection_made(tls)  # start_tls does not call it
        return connection

    def release(self, connection: _Connection) -> None:
        if self.closed or len(self.idle) >= self.max_idle:
            connection.close()
        else:
            connection.idle_since = connection.loop.time()
            self.idle.append(connection)
            self._prune(connection.loop)

    def close(self) -> None:
        self.closed = True
        for connection in list(self.live):
            connection.close()
        self.idle.clear()


def _refusal(proxy: Proxy, what: str, status: int, reason: str) -> str:
    """The message of a proxy's refusal, with a hint on ``407``; never the credentials."""
    message = f"proxy {proxy.name} refused {what}: {status} {reason}".rstrip()
    if status == 407:
        message += (" (the credentials in the proxy URL were rejected)" if proxy.authorization
                    else " (credentials go in the proxy URL: http://user:password@host:port)")
    return message


class _ProxyHandshake(asyncio.Protocol):
    """Reads a proxy's answer to ``CONNECT``: a head (a refusal's body is not read)."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy
        self._head = bytearray()
        self.answer: asyncio.Future[tuple[int, str]] = \
            asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.answer.done():
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end >= 0:
            self._settle(bytes(self._head[:end]), extra=len(self._head) > end + 4)
        elif len(self._head) > MAX_PROXY_HEAD_BYTES:
            self._fail(f"answered CONNECT with more than {MAX_PROXY_HEAD_BYTES} bytes of head")

    def _settle(self, head: bytes, *, extra: bool) -> None:
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        match = re.fullmatch(r"HTTP/1\.[01] (\d{3})(?: (.*))?", line)
        if match is None:
            self._fail(f"answered CONNECT with {line[:100]!r}")
        elif extra and match[1].startswith("2"):  # the target speaks only after TLS starts
            self._fail("sent bytes after accepting CONNECT")
        else:
            self.answer.set_result((int(match[1]), (match[2] or "").strip()))

    def _fail(self, what: str) -> None:
        if not self.answer.done():
            self.answer.set_exception(ProxyError(f"proxy {self._proxy.name} {what}"))

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail("closed the connection before answering CONNECT")


class HttpStream:
    """A response read as it arrives: status and headers at once, the body in chunks.

    The body is buffered between the connection and the reader; past
    :data:`STREAM_HIGH_WATER` bytes the connection stops reading until the reader catches up.
    """

    def __init__(self, connection: _Connection, status: int, reason: str,
                 raw_headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self._connection: _Connection | None = connection
        self.status = status
        self.reason = reason
        self.raw_headers = raw_headers
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._ended = False
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Header names lower-cased; a repeated header keeps its last value."""
        return _header_dict(self.raw_headers)

    @property
    def buffered(self) -> int:
        """Bytes of the body received and not yet read."""
        return self._buffered

    @property
    def content_type(self) -> str:
        """The media type, lower-cased, without parameters (``""`` when there is none)."""
        for name, value in self.raw_headers:
            if name.lower() == b"content-type":
                return value.decode("latin-1").partition(";")[0].strip().lower()
        return ""

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (decoded); an error of the exchange is raised."""
        while True:
            chunk = await self._next()
            if chunk is None:
                return
            yield chunk

    async def lines(self, max_line: int = MAX_LINE_BYTES) -> AsyncIterator[bytes]:
        """The body split after each ``\\n`` (kept); a line longer than ``max_line`` is an
        :class:`HttpProtocolError`."""
        pending = b""
        async for chunk in self.chunks():
            pending += chunk
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                yield pending[start:end + 1]
                start = end + 1
            pending = pending[start:]
            if len(pending) > max_line:
                raise HttpProtocolError(f"a line of the response is longer than {max_line} bytes")
        if pending:
            yield pending

    async def read(self) -> bytes:
        """The rest of the body, whole."""
        parts = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise HttpProtocolError(f"the response is larger than {MAX_RESPONSE_BYTES} bytes")
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Done with the stream: a connection still receiving its body is closed."""
        connection, self._connection = self._connection, None
        if connection is not None and not self._ended:
            connection.abandon()
        self._chunks.clear()

    async def _next(self) -> bytes | None:
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._ended:
                return None
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < STREAM_LOW_WATER and self._connection is not None:
            self._connection.resume()
        return chunk

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def feed(self, chunk: bytes) -> None:
        if chunk:
            self._chunks.append(chunk)
            self._buffered += len(chunk)
            if self._buffered > STREAM_HIGH_WATER and self._connection is not None:
                self._connection.pause()
            self._wake()

    def end(self) -> None:
        self._ended = True
        self._connection = None  # the connection has moved on: nothing to pause or close
        self._wake()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._connection = None
        self._wake()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection; at most one exchange at a time.

    An exchange is whole (:class:`HttpReply` once the body is complete) or streamed
    (:class:`HttpStream` once the head is complete, then fed its body); it is active from the
    request's write until its response ends or fails, and its one timer runs all that time.
    """

    def __init__(self, origin: _Origin) -> None:
        self._origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self._active = False
        self._streaming = False
        self._waiter: asyncio.Future[HttpReply | HttpStream] | None = None
        self._stream: HttpStream | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._read_timeout = 0.0
        self._deadline = 0.0
        self._last_data = 0.0
        self._paused = False
        self._received = False  # any byte of the current answer
        self._head_size = 0  # bytes of it before its headers ended (interim answers too)
        self._status_line = bytearray()
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._framed = False  # Content-Length or chunked (else: the body ends at close)
        self._headers_done = False
        self._decoder: _Decoder | None = None
        self.exchanges = 0
        self.idle_since = 0.0
        self.closed = False

    # -- the exchange --------------------------------------------------------------------------

    def exchange(self, data: bytes, read_timeout: float, deadline: float, *,
                 stream: bool) -> asyncio.Future[HttpReply | HttpStream]:
        assert self._transport is not None and not self._active
        waiter = self._waiter = self.loop.create_future()
        self._active = True
        self._streaming = stream
        self._read_timeout = read_timeout
        self._deadline = deadline
        now = self._last_data = self.loop.time()
        self._timer = self.loop.call_at(min(deadline, now + read_timeout), self._on_timer)
        self._transport.write(data)
        return waiter

    def _on_timer(self) -> None:
        self._timer = None
        if not self._active:
            return
        now = self.loop.time()
        if self._paused:  # the reader is behind, not the server: silence is ours
            self._last_data = now
        if now >= self._deadline:
            self._fail(TimeoutError(f"no complete answer from {self._origin.authority} within "
                                    "timeouts.total"))
        elif now - self._last_data >= self._read_timeout:
            self._fail(TimeoutError(f"{self._origin.authority} sent nothing for "
                                    f"{self._read_timeout:g} s (timeouts.read)"))
        else:
            self._timer = self.loop.call_at(
                min(self._deadline, self._last_data + self._read_timeout), self._on_timer)

    def _head(self) -> tuple[int, str, tuple[tuple[bytes, bytes], ...]]:
        return (self._parser.get_status_code(), self._status_line.decode("latin-1").strip(),
                tuple(self._headers))

    def _finish_whole(self) -> HttpReply | None:
        """The current answer as a reply (or ``None`` after failing the exchange)."""
        body = b"".join(self._body)
        if self._decoder is not None:
            try:
                body = self._decoder.decode(body, final=True)
            except HttpProtocolError as exc:
                self._fail(exc)
                return None
        return HttpReply(*self._head(), body)

    def _reset(self) -> None:
        self._received = False
        self._head_size = 0
        self._status_line.clear()
        self._headers = []
        self._body = []
        self._size = 0
        self._framed = False
        self._headers_done = False
        self._decoder = None

    def _detach(self) -> tuple[asyncio.Future[HttpReply | HttpStream] | None, HttpStream | None]:
        """End the exchange: its waiter and stream (to settle), no timer."""
        waiter, stream = self._waiter, self._stream
        self._waiter = self._stream = None
        self._active = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return waiter, stream

    def _complete(self, reply: HttpReply | None) -> None:
        """The response ended: settle the exchange, then reuse or close the connection."""
        keep_alive = self._parser.should_keep_alive()
        waiter, stream = self._detach()
        self._reset()
        self.exchanges += 1
        if waiter is not None and reply is not None and not waiter.done():
            waiter.set_result(reply)
        if stream is not None:
            stream.end()
        if self._paused:
            self.resume()
        if keep_alive and not self.closed:
            self._origin.release(self)
        else:
            self.close()

    def _fail(self, exc: BaseException) -> None:
        """End the exchange with ``exc``; the connection is not reused."""
        waiter, stream = self._detach()
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        if stream is not None:
            stream.fail(exc)

    def abandon(self) -> None:
        """The reader left a stream before its end: the rest of the body is not wanted."""
        if self._active:
            self._detach()
            self.close()

    def pause(self) -> None:
        if not self._paused and self._transport is not None and not self.closed:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._last_data = self.loop.time()
            self._transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        self._origin.live.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None and not self.loop.is_closed():
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._origin.live.add(self)

    def data_received(self, data: bytes) -> None:
        if not self._active:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self._last_data = self.loop.time()
        self._received = True
        if not self._headers_done:
            self._head_size += len(data)
            if self._head_size > MAX_HEAD_BYTES:
                self._fail(HttpProtocolError(
                    f"{self._origin.authority} sent more than {MAX_HEAD_BYTES} bytes of "
                    "response headers"))
                self.close()
                return
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._active:  # raised after this exchange ended (on_message_begin)
                self.close()
                return
            cause = exc.__context__  # what a callback below raised, if one did
            self._fail(cause if isinstance(cause, HttpProtocolError) else HttpProtocolError(
                f"malformed HTTP response from {self._origin.authority}: "
                f"{cause or exc or type(exc).__name__}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport; connection_lost settles the exchange

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._origin.live.discard(self)
        if not self._active:
            return
        if self._headers_done and not self._framed:  # a body that ends when the server closes
            if self._streaming:
                if self._flush_decoder():
                    self._complete(None)
            else:
                reply = self._finish_whole()
                if reply is not None:
                    self._complete(reply)
            return
        authority = self._origin.authority
        if not self._received:
            self._fail(_StaleConnection(f"{authority} closed the connection"))
        elif self._headers_done:
            self._fail(HttpProtocolError(f"truncated response: {authority} closed the "
                                         f"connection after {self._size} bytes of the body"))
        else:
            self._fail(HttpProtocolError(f"truncated response: {authority} closed the "
                                         "connection in the middle of the headers"))

    def _flush_decoder(self) -> bool:
        """A streamed body's last decoded bytes; ``False`` after failing the exchange."""
        if self._decoder is not None and self._stream is not None:
            try:
                self._stream.feed(self._decoder.decode(b"", final=True))
            except HttpProtocolError as exc:
                self._fail(exc)
                return False
        return True

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if not self._active:  # a second answer to one request: the stream is out of step
            self.close()
            raise HttpProtocolError(f"{self._origin.authority} sent an unrequested response")

    def on_status(self, status: bytes) -> None:
        self._status_line += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._headers_done = True
        for name, value in self._headers:
            lowered = name.lower()
            if lowered == b"content-length":
                self._framed = True
                if not self._streaming and int(value) > MAX_RESPONSE_BYTES:
                    raise HttpProtocolError(self._too_large())
            elif lowered == b"transfer-encoding":
                self._framed = True
            elif lowered == b"content-encoding":
                encoding = value.strip().lower()
                self._decoder = None if encoding == b"identity" else _Decoder(
                    encoding, self._origin.authority)
        if self._parser.should_upgrade():
            raise HttpProtocolError(f"{self._origin.authority} answered with a protocol upgrade")
        status = self._parser.get_status_code()
        if self._streaming and not 100 <= status < 200:
            waiter = self._waiter
            self._waiter = None
            self._stream = HttpStream(self, *self._head())
            if waiter is not None and not waiter.done():
                waiter.set_result(self._stream)

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        stream = self._stream
        if stream is not None:
            stream.feed(self._decoder.decode(body) if self._decoder is not None else body)
            return
        if self._streaming:  # the reader has gone: nothing to keep
            return
        if self._size > MAX_RESPONSE_BYTES:
            raise HttpProtocolError(self._too_large())
        self._body.append(body)

    def on_message_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:  # interim (100 Continue, 103): skip
            head_size = self._head_size  # an endless run of them is an endless head
            self._reset()
            self._head_size = head_size
            return
        if self._streaming:
            if self._flush_decoder():
                self._complete(None)
            return
        reply = self._finish_whole()
        if reply is not None:
            self._complete(reply)

    def _too_large(self) -> str:
        return (f"the response from {self._origin.authority} is larger than "
                f"{MAX_RESPONSE_BYTES} bytes")


class _Decoder:
    """``gzip`` or ``deflate`` (zlib-wrapped, as the RFC says, or raw, as servers send),
    decoded incrementally."""

    def __init__(self, encoding: bytes, authority: str) -> None:
        if encoding not in (b"gzip", b"x-gzip", b"deflate"):
            raise HttpProtocolError(
                f"unsupported Content-Encoding {encoding.decode('latin-1')!r} from {authority}")
        self._encoding = encoding
        self._authority = authority
        self._zlib: Any = None
        self._size = 0

    def decode(self, data: bytes, *, final: bool = False) -> bytes:
        if self._zlib is None:
            if not data and not final:
                return b""
            if self._encoding == b"deflate":
                bits = zlib.MAX_WBITS if data[:1] == b"\x78" else -zlib.MAX_WBITS
            else:
                bits = 16 + zlib.MAX_WBITS
            self._zlib = zlib.decompressobj(bits)
        try:
            out: bytes = self._zlib.decompress(data, MAX_RESPONSE_BYTES + 1 - self._size)
            if final:
                out += self._zlib.flush()
        except zlib.error as exc:
            raise HttpProtocolError(f"undecodable {self._encoding.decode('latin-1')} body from "
                                    f"{self._authority}: {exc}") from None
        self._size += len(out)
        if self._size > MAX_RESPONSE_BYTES or self._zlib.unconsumed_tail:
            raise HttpProtocolError(f"the decoded body from {self._authority} is larger than "
                                    f"{MAX_RESPONSE_BYTES} bytes")
        return out
