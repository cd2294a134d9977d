"""The keep-alive HTTP/1.1 client (``router.backends.http1``) against real servers on loopback:
aiohttp apps for well-behaved HTTP, ``asyncio.start_server`` for servers that misbehave."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
import ssl
import threading
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trustme
from aiohttp import web
from yarl import URL

from router.backends import http1
from router.backends.http1 import (
    Endpoint,
    Http1Client,
    HttpProtocolError,
    HttpTimeouts,
    ProxyError,
    encode_headers,
)
from router.backends.proxies import Proxy, ProxySettings
from router.config import settings_from_mapping
from router.pool import Pool
from tests.fakes import FakeUpstream

TIMEOUTS = HttpTimeouts(connect=2, read=5, total=10)
JSON = encode_headers({"Content-Type": "application/json"})

RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clients made here read the environment: a developer's ``HTTPS_PROXY`` must not send
    these loopback calls to a real proxy. Tests that want proxies say which."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    yield


@asynccontextmanager
async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None
                ) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://localhost:{runner.addresses[0][1]}" if ssl_context else \
            f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def serve_raw(handler: RawHandler) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request's body (the client always sends Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    return await reader.readexactly(length)


async def each_request(reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> AsyncIterator[bytes]:
    """The body of each request on one connection, until the client closes it."""
    while True:
        try:
            yield await read_request(reader)
        except asyncio.IncompleteReadError:
            writer.close()
            return


def echo_app() -> tuple[web.Application, list[int]]:
    """Echoes the body; records the client port of each request (one port = one connection)."""
    ports: list[int] = []

    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        ports.append(peer[1] if peer else -1)
        body = await request.read()
        delay = float(request.headers.get("x-delay", "0"))
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=b"echo:" + body, content_type="application/json",
                            headers={"x-seen-host": request.headers.get("Host", "")})

    app = web.Application()
    app.router.add_post("/v1/echo", echo)
    return app, ports


async def test_sequential_calls_share_one_kept_alive_connection() -> None:
    app, ports = echo_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/v1/echo")
        for i in range(20):
            reply = await client.post(endpoint, JSON, b'{"i": %d}' % i, TIMEOUTS)
            assert (reply.status, reply.reason, reply.body) == (200, "OK", b'echo:{"i": %d}' % i)
            assert reply.headers["x-seen-host"] == url.removeprefix("http://")
        assert len(set(ports)) == 1 and len(ports) == 20
        assert client.idle_connections(endpoint) == 1
        await client.aclose()
        assert client.idle_connections(endpoint) == 0
        with pytest.raises(ConnectionError, match="closed"):
            await client.post(endpoint, JSON, b"{}", TIMEOUTS)


async def test_concurrent_calls_each_get_their_own_answer() -> None:
    app, ports = echo_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/v1/echo")

        async def one(i: int) -> bytes:
            head = JSON + encode_headers({"x-delay": f"{(i % 5) / 200:.3f}"})
            return (await client.post(endpoint, head, b"%d" % i, TIMEOUTS)).body

        answers = await asyncio.gather(*(one(i) for i in range(60)))
        assert answers == [b"echo:%d" % i for i in range(60)]
        assert 1 < len(set(ports)) <= 60
        assert client.idle_connections(endpoint) == len(set(ports))  # all back in the pool
        again = await asyncio.gather(*(one(i) for i in range(60)))
        assert again == answers and len(set(ports)) <= 60  # the second wave reused them
    await client.aclose()


async def test_chunked_gzip_and_deflate_bodies_are_decoded() -> None:
    payload = b'{"text": "' + b"x" * 300_000 + b'"}'

    async def chunked(request: web.Request) -> web.StreamResponse:
        received = len(await request.read())
        response = web.StreamResponse(headers={"x-received": str(received)})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(0, len(payload), 7_001):
            await response.write(payload[i:i + 7_001])
        await response.write_eof()
        return response

    async def encoded(request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        body = {"gzip": gzip.compress(payload), "deflate": zlib.compress(payload),
                "raw-deflate": zlib.compress(payload, wbits=-15)}[kind]
        name = "deflate" if kind == "raw-deflate" else kind
        return web.Response(body=body, headers={"Content-Encoding": name})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/chunked", chunked)
    app.router.add_post("/encoded/{kind}", encoded)
    client = Http1Client()
    async with serve(app) as url:
        reply = await client.post(Endpoint.parse(url + "/chunked"), JSON, b"{}", TIMEOUTS)
        assert reply.body == payload
        assert reply.headers["transfer-encoding"] == "chunked"
        for kind in ("gzip", "deflate", "raw-deflate"):
            reply = await client.post(Endpoint.parse(f"{url}/encoded/{kind}"), JSON, b"{}",
                                      TIMEOUTS)
            assert reply.body == payload, kind
        # a big request body goes out whole as well
        app_reply = await client.post(Endpoint.parse(url + "/chunked"), JSON, payload * 4,
                                      TIMEOUTS)
        assert app_reply.headers["x-received"] == str(len(payload) * 4)
        endpoint = Endpoint.parse(url + "/chunked")
        assert client.idle_connections(endpoint) == 1  # every one of them kept alive
    await client.aclose()


async def test_connection_close_is_honoured() -> None:
    ports: list[int] = []

    async def closing(request: web.Request) -> web.Response:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        return web.Response(text="bye", headers={"Connection": "close"})

    app = web.Application()
    app.router.add_post("/", closing)
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/")
        for _ in range(3):
            assert (await client.post(endpoint, JSON, b"{}", TIMEOUTS)).body == b"bye"
            assert client.idle_connections(endpoint) == 0
        assert len(set(ports)) == 3
    await client.aclose()


async def test_a_connection_idle_too_long_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.2)
    app, ports = echo_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/v1/echo")
        for pause in (0.0, 0.05, 0.4, 0.0):
            await asyncio.sleep(pause)
            assert (await client.post(endpoint, JSON, b"x", TIMEOUTS)).body == b"echo:x"
        # reused after 0 and 50 ms, replaced after 400 ms of idleness, then reused again
        assert ports[0] == ports[1] and ports[1] != ports[2] and ports[2] == ports[3]
    await client.aclose()


async def test_a_burst_s_idle_connections_are_closed_once_kept_too_long(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """After a burst, light traffic takes the most recent idle connection each time: the
    others, idle past KEEPALIVE_S, are closed then, not kept open (a descriptor each) for as
    long as an upstream that never closes idle connections keeps them."""
    monkeypatch.setattr(http1, "KEEPALIVE_S", 0.3)
    app, ports = echo_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/v1/echo")
        head = JSON + encode_headers({"x-delay": "0.05"})
        await asyncio.gather(*(client.post(endpoint, head, b"x", TIMEOUTS) for _ in range(20)))
        assert client.idle_connections(endpoint) == len(set(ports)) > 1
        for _ in range(5):  # a trickle, each call on the newest connection
            await asyncio.sleep(0.1)
            assert (await client.post(endpoint, JSON, b"y", TIMEOUTS)).body == b"echo:y"
        assert client.idle_connections(endpoint) == 1
    await client.aclose()


def answer(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def test_a_kept_connection_closed_unanswered_is_retried_once_on_a_new_one() -> None:
    """The server's keep-alive timeout races the next request: it reads it and closes without a
    byte of answer. The request never reached a handler, so it goes again on a new connection."""
    connections = 0

    async def one_answer_per_connection(reader: asyncio.StreamReader,
                                        writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        writer.write(answer(b"first:" + await read_request(reader)))
        await writer.drain()
        await read_request(reader)  # the next one is read, never answered
        writer.close()

    client = Http1Client()
    async with serve_raw(one_answer_per_connection) as url:
        endpoint = Endpoint.parse(url + "/")
        assert (await client.post(endpoint, JSON, b"a", TIMEOUTS)).body == b"first:a"
        assert (await client.post(endpoint, JSON, b"b", TIMEOUTS)).body == b"first:b"
        assert connections == 2
    await client.aclose()


async def test_a_new_connection_closed_unanswered_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    client = Http1Client()
    async with serve_raw(hang_up) as url:
        with pytest.raises(ConnectionError, match="without answering"):
            await client.post(Endpoint.parse(url + "/"), JSON, b"{}", TIMEOUTS)
    await client.aclose()


async def test_a_refused_connection_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = Http1Client()
    with pytest.raises(ConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
        await client.post(Endpoint.parse(f"http://127.0.0.1:{port}/v1"), JSON, b"{}", TIMEOUTS)
    await client.aclose()


async def test_read_timeout_counts_silence_and_total_counts_everything() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Headers, then one body byte every 50 ms; silent for 1 s when asked ("slow")."""
        body = await read_request(reader)
        if body == b"slow":
            await asyncio.sleep(1.0)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n")
        for _ in range(12):
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"z")
        await writer.drain()
        await reader.read()

    client = Http1Client()
    async with serve_raw(drip) as url:
        endpoint = Endpoint.parse(url + "/")
        # 0.6 s in all, never 0.2 s without a byte: the read timer is re-armed as bytes come
        reply = await client.post(endpoint, JSON, b"go", HttpTimeouts(1, read=0.2, total=5))
        assert reply.body == b"z" * 12
        with pytest.raises(TimeoutError, match=r"sent nothing for 0.2 s \(timeouts.read\)"):
            await client.post(endpoint, JSON, b"slow", HttpTimeouts(1, read=0.2, total=5))
        with pytest.raises(TimeoutError, match=r"timeouts\.total"):
            await client.post(endpoint, JSON, b"go", HttpTimeouts(1, read=0.2, total=0.3))
        assert client.idle_connections(endpoint) == 0  # a timed-out connection is not reused
    await client.aclose()


@pytest.mark.parametrize(("wire", "message"), [
    (b"garbage\r\n\r\n", "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b", "after 10 bytes of the body"),
    (b"HTTP/1.1 200 OK\r\nContent-Le", "in the middle of the headers"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\nhi",
     "unsupported Content-Encoding 'br'"),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nhi",
     "undecodable gzip body"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
     "upgrade"),
])
async def test_malformed_answers_are_protocol_errors(wire: bytes, message: str) -> None:
    async def bad(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(wire)
        await writer.drain()
        writer.close()

    client = Http1Client()
    async with serve_raw(bad) as url:
        with pytest.raises(HttpProtocolError, match=message):
            await client.post(Endpoint.parse(url + "/"), JSON, b"{}", TIMEOUTS)
    await client.aclose()


async def test_an_unrequested_second_answer_retires_the_connection() -> None:
    connections = 0

    async def twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        async for body in each_request(reader, writer):
            writer.write(answer(body) + answer(b"unrequested"))  # one request, two answers
            await writer.drain()

    client = Http1Client()
    async with serve_raw(twice) as url:
        endpoint = Endpoint.parse(url + "/")
        for word in (b"one", b"two", b"three"):
            assert (await client.post(endpoint, JSON, word, TIMEOUTS)).body == word
        assert connections == 3 and client.idle_connections(endpoint) == 0
    await client.aclose()


async def test_interim_answers_are_skipped_and_a_body_may_end_at_close() -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        if body == b"interim":
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"final"))
            await writer.drain()
            await read_request(reader)  # the connection was kept: a second request arrives
            writer.write(answer(b"second"))
        else:  # HTTP/1.0 style: no length, the body ends when the server closes
            writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    client = Http1Client()
    async with serve_raw(server) as url:
        endpoint = Endpoint.parse(url + "/")
        reply = await client.post(endpoint, JSON, b"interim", TIMEOUTS)
        assert (reply.status, reply.body) == (200, b"final")
        assert (await client.post(endpoint, JSON, b"again", TIMEOUTS)).body == b"second"
        reply = await client.post(endpoint, JSON, b"eof", TIMEOUTS)
        assert reply.body == b"until the end"
    await client.aclose()


async def test_an_oversized_answer_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_RESPONSE_BYTES", 1000)

    async def big(request: web.Request) -> web.StreamResponse:
        if request.path == "/declared":
            return web.Response(body=b"x" * 1001)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b"y" * 400)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{name}", big)
    client = Http1Client()
    async with serve(app) as url:
        for name in ("declared", "chunked"):
            with pytest.raises(HttpProtocolError, match="larger than 1000 bytes"):
                await client.post(Endpoint.parse(f"{url}/{name}"), JSON, b"{}", TIMEOUTS)
    await client.aclose()


@pytest.mark.parametrize("head", ["many headers", "one endless header", "endless 103s"])
async def test_an_endless_response_head_is_refused_at_its_limit(head: str) -> None:
    """Headers that never end took 1.9 GB before the total timeout: now an error once the
    head passes ``MAX_HEAD_BYTES`` (a single header that never ends, and a run of interim
    answers, count too), with the memory bounded."""
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        if head == "endless 103s":
            writer.write(b"")
        else:
            writer.write(b"HTTP/1.1 200 OK\r\n" + (b"X-Endless: " if head != "many headers"
                                                    else b""))
        try:
            while sent < 64 * http1.MAX_HEAD_BYTES:  # bounded: 16 MB at most
                chunk = {"many headers": b"X-Filler: " + b"f" * 8000 + b"\r\n",
                         "one endless header": b"e" * 8000,
                         "endless 103s": b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"}[head]
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    client = Http1Client()
    async with serve_raw(endless) as url:
        with pytest.raises(HttpProtocolError, match="bytes of response headers"):
            await client.post(Endpoint.parse(f"{url}/v1/x"), JSON, b"{}", TIMEOUTS)
    await client.aclose()
    assert sent < 16 * http1.MAX_HEAD_BYTES  # refused soon after the limit, not at the end


async def test_a_cancelled_call_spends_its_connection_and_the_next_call_works() -> None:
    app, _ports = echo_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/v1/echo")
        slow = asyncio.create_task(client.post(endpoint, JSON + encode_headers({"x-delay": "1"}),
                                               b"slow", TIMEOUTS))
        await asyncio.sleep(0.1)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert client.idle_connections(endpoint) == 0  # its answer would still come: closed
        assert (await client.post(endpoint, JSON, b"next", TIMEOUTS)).body == b"echo:next"
    await client.aclose()


async def test_tls_with_a_trusted_and_an_untrusted_certificate() -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    app, _ports = echo_app()
    async with serve(app, server_context) as url:
        assert url.startswith("https://localhost:")
        endpoint = Endpoint.parse(url + "/v1/echo")
        client = Http1Client(ssl_context=trusting)
        for _ in range(2):
            assert (await client.post(endpoint, JSON, b"secret", TIMEOUTS)).body == \
                b"echo:secret"
        assert client.idle_connections(endpoint) == 1
        await client.aclose()
        untrusting = Http1Client()  # the system's trust store does not know this CA
        with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post(endpoint, JSON, b"secret", TIMEOUTS)
        await untrusting.aclose()


def test_one_client_across_event_loops() -> None:
    """``asyncio.run`` twice with one client (the CLI does): the first loop's idle connection
    is dropped, not written to."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async for body in each_request(reader, writer):
            writer.write(answer(body))
            await writer.drain()

    ready = threading.Event()
    stop: list[Callable[[], None]] = []
    address: list[str] = []

    def run_server() -> None:
        async def main() -> None:
            async with serve_raw(handler) as url:
                address.append(url)
                done = asyncio.Event()
                loop = asyncio.get_running_loop()
                stop.append(lambda: loop.call_soon_threadsafe(done.set))
                ready.set()
                await done.wait()

        asyncio.run(main())

    thread = threading.Thread(target=run_server, daemon=True)
    thread.start()
    assert ready.wait(10)
    client = Http1Client()
    endpoint = Endpoint.parse(address[0] + "/")
    try:
        for word in (b"one", b"two"):
            reply = asyncio.run(client.post(endpoint, JSON, word, TIMEOUTS))
            assert reply.body == word
    finally:
        stop[0]()
        thread.join(10)


@pytest.mark.parametrize("headers", [{"X-Bad": "a\r\nInjected: yes"}, {"Bad\nName": "x"},
                                     {"Colon:Name": "x"}, {"": "x"}])
def test_header_line_breaks_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="line break or an invalid name"):
        encode_headers(headers)


@pytest.mark.parametrize(("url", "origin", "target", "host"), [
    ("http://127.0.0.1:8000/v1/chat/completions", ("http", "127.0.0.1", 8000),
     b"/v1/chat/completions", b"127.0.0.1:8000"),
    ("https://api.example.com/v1/x?api-version=2", ("https", "api.example.com", 443),
     b"/v1/x?api-version=2", b"api.example.com"),
    ("http://[::1]:9/v1", ("http", "::1", 9), b"/v1", b"[::1]:9"),
])
def test_endpoints_parse_origin_target_and_host(url: str, origin: tuple[str, str, int],
                                                target: bytes, host: bytes) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.origin, endpoint.target, endpoint.host_header) == (origin, target, host)
    with pytest.raises(ValueError, match="not an http"):
        Endpoint.parse("ftp://example.com/")


# --- streamed responses ----------------------------------------------------------------------


def sse_app(lines: int = 5, pause: float = 0.0, compress: bool = False) -> tuple[
        web.Application, list[int]]:
    """``POST /sse``: ``lines`` events, ``pause`` seconds apart; ``GET /big``: 4 MiB of lines."""
    ports: list[int] = []

    async def sse(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        if compress:
            response.enable_compression(web.ContentCoding.gzip)
        await response.prepare(request)
        for i in range(lines):
            await response.write(b"data: {\"i\": %d}\n\n" % i)
            await asyncio.sleep(pause)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        line = b"x" * 1023 + b"\n"
        for _ in range(4):
            await response.write(line * 1024)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/sse", sse)
    app.router.add_get("/big", big)
    return app, ports


async def test_a_stream_arrives_line_by_line_and_its_connection_is_reused() -> None:
    for compress in (False, True):
        app, ports = sse_app(lines=5, pause=0.01, compress=compress)
        client = Http1Client()
        async with serve(app) as url:
            endpoint = Endpoint.parse(url + "/sse")
            for _ in range(2):
                stream = await client.open("POST", endpoint, JSON, b"{}", TIMEOUTS)
                assert (stream.status, stream.content_type) == (200, "text/event-stream")
                lines = [line async for line in stream.lines()]
                stream.close()
                events = [b'data: {"i": %d}\n' % i for i in range(5)] + [b"data: [DONE]\n"]
                assert lines == [line for event in events for line in (event, b"\n")]
                assert client.idle_connections(endpoint) == 1
            assert len(ports) == 2 and ports[0] == ports[1], compress
        await client.aclose()


async def test_a_stream_left_early_closes_its_connection() -> None:
    app, ports = sse_app(lines=20, pause=0.05)
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/sse")
        stream = await client.open("POST", endpoint, JSON, b"{}", TIMEOUTS)
        first = await anext(stream.lines())
        assert first == b'data: {"i": 0}\n'
        stream.close()
        assert client.idle_connections(endpoint) == 0  # the rest would still come: closed
        stream = await client.open("POST", endpoint, JSON, b"{}", TIMEOUTS)
        assert (await stream.read()).endswith(b"data: [DONE]\n\n")
        stream.close()
        assert len(set(ports)) == 2
    await client.aclose()


async def test_a_slow_reader_pauses_the_connection_without_a_read_timeout() -> None:
    """4 MiB sent at once to a reader that waits longer than the read timeout between reads:
    the connection stops reading past the high-water mark, and that silence is not the
    server's."""
    app, _ports = sse_app()
    client = Http1Client()
    async with serve(app) as url:
        endpoint = Endpoint.parse(url + "/big")
        stream = await client.open("GET", endpoint, b"", None, HttpTimeouts(2, read=0.3, total=10))
        received, reads, peak = 0, 0, 0
        async for chunk in stream.chunks():
            received += len(chunk)
            reads += 1
            if reads <= 3:
                await asyncio.sleep(0.4)  # longer than the read timeout, three times
                peak = max(peak, stream.buffered)
        stream.close()
        assert received == 4 * 1024 * 1024
        assert http1.STREAM_HIGH_WATER <= peak <= http1.STREAM_HIGH_WATER + 512 * 1024
        assert client.idle_connections(endpoint) == 1
    await client.aclose()


async def test_stream_failures_reach_the_reader() -> None:
    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        if body == b"cut":
            writer.write(b"f\r\ndata: {\"i\": 0}\n\r\n20\r\ndata: {\"i\"")  # a chunk cut short
        elif body == b"long":
            writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
        else:  # "stall": one event, then silence
            writer.write(b"f\r\ndata: {\"i\": 0}\n\r\n")
        await writer.drain()
        if body == b"stall":
            await asyncio.sleep(1)
        writer.close()

    client = Http1Client()
    async with serve_raw(server) as url:
        endpoint = Endpoint.parse(url + "/")
        cases: list[tuple[bytes, type[Exception], str, dict[str, int]]] = [
            (b"cut", HttpProtocolError, "truncated response", {}),
            (b"stall", TimeoutError, r"timeouts\.read", {}),
            (b"long", HttpProtocolError, "longer than 100 bytes", {"max_line": 100}),
        ]
        for body, error, message, options in cases:
            stream = await client.open("POST", endpoint, JSON, body,
                                       HttpTimeouts(2, read=0.3, total=5))
            with pytest.raises(error, match=message):
                async for _line in stream.lines(**options):
                    pass
            stream.close()
    await client.aclose()


# --- proxies ---------------------------------------------------------------------------------


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class LoopbackProxy:
    """A forwarding proxy: ``CONNECT`` tunnels and absolute-form requests (each forwarded on a
    new upstream connection), optionally asking for Basic ``credentials`` or refusing every
    request with ``refuse``. It records what it saw."""

    def __init__(self, credentials: str | None = None, refuse: bytes | None = None) -> None:
        self.expected = None if credentials is None else \
            "Basic " + base64.b64encode(credentials.encode()).decode()
        self.refuse = refuse
        self.connections = 0
        self.request_lines: list[str] = []  # every request, refused or not
        self.authorizations: list[str | None] = []
        self.tunnels: list[str] = []  # targets of accepted CONNECTs
        self.forwarded: list[str] = []  # request lines of forwarded requests

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                line, *fields = head.decode("latin-1").strip().split("\r\n")
                headers = {name.strip().lower(): value.strip()
                           for name, _, value in (f.partition(":") for f in fields)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.request_lines.append(line)
                self.authorizations.append(headers.get("proxy-authorization"))
                method, target, _version = line.split(" ")
                status = self.refuse
                if self.expected is not None and \
                        headers.get("proxy-authorization") != self.expected:
                    status = b"407 Proxy Authentication Required"
                if status is not None:
                    writer.write(b"HTTP/1.1 %s\r\nContent-Length: 7\r\n\r\nrefused" % status)
                elif method == "CONNECT":
                    self.tunnels.append(target)
                    await self._tunnel(target, reader, writer)
                    return
                else:
                    self.forwarded.append(line)
                    writer.write(await self._forward(method, URL(target), fields, body))
                await writer.drain()
        finally:
            writer.close()

    async def _tunnel(self, target: str, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        host, _, port = target.rpartition(":")
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def _forward(self, method: str, target: URL, fields: list[str], body: bytes) -> bytes:
        """The upstream's answer (it must have a Content-Length) to the request in origin-form,
        without the proxy's headers."""
        reader, writer = await asyncio.open_connection(target.host, target.port)
        kept = "".join(f"{f}\r\n" for f in fields if not f.lower().startswith("proxy-"))
        writer.write(f"{method} {target.raw_path_qs} HTTP/1.1\r\n{kept}\r\n".encode() + body)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])  # type: ignore[index]
        answer = head + await reader.readexactly(length)
        writer.close()
        return answer


def tls_pair() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for ``localhost`` and a client context trusting it."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    return server_context, trusting


def through(scheme: str, proxy_url: str, no_proxy: str = "") -> ProxySettings:
    if scheme == "https":
        return ProxySettings.parse(https=proxy_url, no_proxy=no_proxy)
    return ProxySettings.parse(http=proxy_url, no_proxy=no_proxy)


async def test_an_https_target_through_a_connect_tunnel_kept_alive() -> None:
    """TLS with the target (its name verified, not the proxy's) inside one tunnel, reused by
    whole and streamed calls."""
    server_context, trusting = tls_pair()
    app, ports = echo_app()
    proxy = LoopbackProxy()
    async with serve(app, server_context) as url, serve_raw(proxy.handle) as proxy_url:
        authority = url.removeprefix("https://")
        endpoint = Endpoint.parse(url + "/v1/echo")
        client = Http1Client(ssl_context=trusting, proxies=through("https", proxy_url))
        for word in (b"one", b"two"):
            reply = await client.post(endpoint, JSON, word, TIMEOUTS)
            assert reply.body == b"echo:" + word and reply.headers["x-seen-host"] == authority
        stream = await client.open("POST", endpoint, JSON, b"three", TIMEOUTS)
        assert await stream.read() == b"echo:three"
        stream.close()
        assert proxy.tunnels == [authority] and proxy.request_lines == [
            f"CONNECT {authority} HTTP/1.1"]
        assert proxy.connections == 1 and len(ports) == 3 and len(set(ports)) == 1
        assert client.idle_connections(endpoint) == 1
        await client.aclose()
        untrusting = Http1Client(proxies=through("https", proxy_url))
        with pytest.raises(ConnectionError, match=re.escape(
                f"cannot connect to {authority} through proxy {proxy_url}: ") +
                ".*CERTIFICATE_VERIFY_FAILED"):
            await untrusting.post(endpoint, JSON, b"secret", TIMEOUTS)
        await untrusting.aclose()
        assert proxy.tunnels == [authority] * 2


async def test_an_http_target_through_a_proxy_in_absolute_form_kept_alive() -> None:
    app, _ports = echo_app()
    proxy = LoopbackProxy()
    async with serve(app) as url, serve_raw(proxy.handle) as proxy_url:
        endpoint = Endpoint.parse(url + "/v1/echo?x=1")
        client = Http1Client(proxies=through("http", proxy_url))
        for word in (b"one", b"two"):
            reply = await client.post(endpoint, JSON, word, TIMEOUTS)
            assert reply.body == b"echo:" + word
            assert reply.headers["x-seen-host"] == url.removeprefix("http://")
        assert proxy.forwarded == [f"POST {url}/v1/echo?x=1 HTTP/1.1"] * 2
        assert proxy.connections == 1 and proxy.tunnels == []
        assert proxy.authorizations == [None, None]
        assert client.idle_connections(endpoint) == 1
        await client.aclose()


async def test_no_proxy_hosts_go_direct() -> None:
    """``localhost`` listed, ``127.0.0.1`` not: one server, reached directly under one name and
    through the proxy under the other (names are not resolved for ``NO_PROXY``)."""
    app, _ports = echo_app()
    proxy = LoopbackProxy()
    async with serve(app) as url, serve_raw(proxy.handle) as proxy_url:
        port = URL(url).port
        client = Http1Client(proxies=through("http", proxy_url, "example.com, localhost"))
        direct = Endpoint.parse(f"http://localhost:{port}/v1/echo")
        assert (await client.post(direct, JSON, b"d", TIMEOUTS)).body == b"echo:d"
        assert proxy.connections == 0
        proxied = Endpoint.parse(f"http://127.0.0.1:{port}/v1/echo")
        assert (await client.post(proxied, JSON, b"p", TIMEOUTS)).body == b"echo:p"
        assert proxy.forwarded == [f"POST http://127.0.0.1:{port}/v1/echo HTTP/1.1"]
        await client.aclose()


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_proxy_credentials_reach_the_proxy_and_a_407_is_a_clear_error(
        scheme: str) -> None:
    server_context, trusting = tls_pair()
    app, _ports = echo_app()
    proxy = LoopbackProxy(credentials="user:p@ss:word")
    async with serve(app, server_context if scheme == "https" else None) as url, \
            serve_raw(proxy.handle) as proxy_url:
        endpoint = Endpoint.parse(url + "/v1/echo")
        address = proxy_url.removeprefix("http://")
        good = Http1Client(ssl_context=trusting,
                           proxies=through(scheme, f"http://us%65r:p%40ss%3Aword@{address}"))
        assert (await good.post(endpoint, JSON, b"in", TIMEOUTS)).body == b"echo:in"
        await good.aclose()
        for userinfo, hint in (("user:wrong@", "the credentials in the proxy URL were rejected"),
                               ("", "credentials go in the proxy URL")):
            bad = Http1Client(ssl_context=trusting,
                              proxies=through(scheme, f"http://{userinfo}{address}"))
            with pytest.raises(ProxyError, match=re.escape(f"proxy {proxy_url} refused ") +
                               ".*407 Proxy Authentication Required.*" + hint) as caught:
                await bad.post(endpoint, JSON, b"out", TIMEOUTS)
            assert "wrong" not in str(caught.value)
            await bad.aclose()
        assert proxy.authorizations == [
            proxy.expected, "Basic " + base64.b64encode(b"user:wrong").decode(), None]
        assert len(proxy.forwarded if scheme == "http" else proxy.tunnels) == 1


@pytest.mark.parametrize("status", [b"403 Forbidden", b"502 Bad Gateway"])
async def test_a_refused_connect_is_a_clear_error(status: bytes) -> None:
    proxy = LoopbackProxy(refuse=status)
    async with serve_raw(proxy.handle) as proxy_url:
        client = Http1Client(proxies=through("https", proxy_url))
        with pytest.raises(ProxyError, match=re.escape(
                f"proxy {proxy_url} refused CONNECT to api.example.com:443: {status.decode()}")):
            await client.post(Endpoint.parse("https://api.example.com/v1/chat"), JSON, b"{}",
                              TIMEOUTS)
        assert proxy.request_lines == ["CONNECT api.example.com:443 HTTP/1.1"]
        await client.aclose()


async def test_an_unreachable_proxy_is_a_connection_error_naming_it() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    proxy_url = f"http://127.0.0.1:{port}"
    client = Http1Client(proxies=ProxySettings.parse(http=proxy_url, https=proxy_url))
    for target in ("http://api.example.com/v1", "https://api.example.com/v1"):
        with pytest.raises(ProxyError, match=re.escape(
                f"cannot connect to proxy {proxy_url} (for api.example.com): ")):
            await client.post(Endpoint.parse(target), JSON, b"{}", TIMEOUTS)
    await client.aclose()


async def test_a_proxy_silent_after_connect_is_a_connect_timeout() -> None:
    given_up = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up and closes
        writer.close()
        given_up.set()

    async with serve_raw(silent) as proxy_url:
        client = Http1Client(proxies=through("https", proxy_url))
        with pytest.raises(TimeoutError, match=re.escape(
                f"connecting to api.example.com through proxy {proxy_url} took longer than "
                "0.2 s (timeouts.connect)")):
            await client.post(Endpoint.parse("https://api.example.com/"), JSON, b"{}",
                              HttpTimeouts(connect=0.2, read=5, total=10))
        await asyncio.wait_for(given_up.wait(), 2)  # the half-made tunnel was closed
        await client.aclose()


async def test_the_pool_client_reads_the_proxy_variables_once(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The OpenAI backend's calls go through the proxy of the environment, read when the pool
    opens (``Pool.open`` makes its ``Http1Client()`` without proxy arguments)."""
    proxy = LoopbackProxy()
    async with FakeUpstream(answers={"up": "B"}) as fake, \
            serve_raw(proxy.handle) as proxy_url:
        settings = settings_from_mapping({"data_dir": str(tmp_path), "models": [{
            "name": "m", "family": "f",
            "backend": {"kind": "openai", "base_url": fake.base_url, "model": "up"}}]})
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        monkeypatch.setenv("http_proxy", proxy_url)
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:1")  # lower-case wins
        async with Pool.open(settings) as pool:
            monkeypatch.delenv("http_proxy")  # read once: later changes do not matter
            await pool.get("m").forward(body)
            await pool.get("m").forward(body)
        assert proxy.forwarded == [f"POST {fake.base_url}/chat/completions HTTP/1.1"] * 2
        assert proxy.connections == 1 and fake.count() == 2
        direct = Http1Client(proxies=ProxySettings())  # explicit: the environment is not read
        monkeypatch.setenv("HTTP_PROXY", proxy_url)
        endpoint = Endpoint.parse(fake.base_url + "/models")
        stream = await direct.open("GET", endpoint, b"", None, TIMEOUTS)
        assert stream.status == 200 and b'"data"' in await stream.read()
        stream.close()
        assert len(proxy.forwarded) == 2
        await direct.aclose()


@pytest.mark.parametrize(("environ", "http", "https"), [
    ({"HTTPS_PROXY": "http://upper:1", "https_proxy": "http://lower:2",
      "HTTP_PROXY": "http://plain:3"}, Proxy("plain", 3), Proxy("lower", 2)),
    ({"HTTPS_PROXY": "http://upper:1", "https_proxy": ""}, None, None),  # set empty: no proxy
    ({"ALL_PROXY": "http://all:9"}, Proxy("all", 9), Proxy("all", 9)),
    ({"all_proxy": "http://all:9", "ALL_PROXY": "http://ALL:8", "HTTP_PROXY": "http://h:1"},
     Proxy("h", 1), Proxy("all", 9)),
    ({"http_proxy": "", "ALL_PROXY": "http://all:9"}, None, Proxy("all", 9)),
    ({"HTTPS_PROXY": "proxy.corp:3128"}, None, Proxy("proxy.corp", 3128)),  # http:// implied
    ({"HTTPS_PROXY": "http://proxy.corp/"}, None, Proxy("proxy.corp", 80)),
    ({"HTTP_PROXY": "http://[fd00::1]:3128"}, Proxy("fd00::1", 3128), None),
    ({"HTTP_PROXY": "  "}, None, None),
    ({"FTP_PROXY": "http://ftp:1"}, None, None),
])
def test_proxy_variables_lower_case_first(environ: dict[str, str], http: Proxy | None,
                                          https: Proxy | None) -> None:
    settings = ProxySettings.from_env(environ)
    assert (settings.http, settings.https) == (http, https)


def test_no_proxy_lower_case_first_and_the_process_environment_by_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ProxySettings.from_env({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "upper.test",
                                       "no_proxy": "lower.test"})
    assert settings.proxy_for("https", "lower.test", 443) is None
    assert settings.proxy_for("https", "upper.test", 443) == Proxy("p", 1)
    monkeypatch.setenv("HTTPS_PROXY", "http://from-env:3128")
    monkeypatch.setenv("no_proxy", "internal.test")
    assert Http1Client().proxies == ProxySettings.parse(https="http://from-env:3128",
                                                         no_proxy="internal.test")


def test_proxy_credentials_are_percent_decoded_and_never_shown() -> None:
    proxy = Proxy.parse("http://us%65r:p%40ss%3Aword@proxy.corp:3128")
    assert proxy.authorization == b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(
        b"user:p@ss:word")
    assert Proxy.parse("http://user@p:1").authorization.endswith(
        base64.b64encode(b"user:") + b"\r\n")
    assert proxy.name == "http://proxy.corp:3128"
    settings = ProxySettings.from_env({"HTTPS_PROXY": "http://user:s3cret@proxy.corp:3128"})
    assert "s3cret" not in repr(settings) + repr(Proxy.parse("http://u:s3cret@p"))
    with pytest.raises(ValueError, match=r"https proxy='socks5://\*\*\*@h:1080': only http://"
                       ) as caught:
        ProxySettings.parse(https="socks5://user:s3cret@h:1080")
    assert "s3cret" not in str(caught.value)


async def test_an_unusable_proxy_variable_fails_only_the_requests_it_would_carry() -> None:
    """``ALL_PROXY=socks5://…`` set for other tools: no error when the client is made, a
    :class:`ProxyError` naming the variable for a call through it, direct calls unaffected."""
    app, _ports = echo_app()
    for value in ("socks5://user:s3cret@h:1080", "https://user:s3cret@h:443"):
        settings = ProxySettings.from_env({"ALL_PROXY": value, "NO_PROXY": "127.0.0.1"})
        client = Http1Client(proxies=settings)
        with pytest.raises(ProxyError, match=r"cannot use ALL_PROXY='\w+://\*\*\*@h:\d+': "
                           r"only http:// proxies are supported \(for api.example.com\)"
                           ) as caught:
            await client.post(Endpoint.parse("http://api.example.com/v1"), JSON, b"{}",
                              TIMEOUTS)
        assert "s3cret" not in str(caught.value) + repr(settings)
        async with serve(app) as url:
            reply = await client.post(Endpoint.parse(url + "/v1/echo"), JSON, b"d", TIMEOUTS)
            assert reply.body == b"echo:d"
        await client.aclose()


@pytest.mark.parametrize(("no_proxy", "host", "port", "direct"), [
    ("example.com", "example.com", 443, True),
    ("example.com", "api.example.com", 443, True),
    (".example.com", "example.com", 443, True),
    (".example.com", "api.example.com", 443, True),
    ("*.example.com", "api.example.com", 443, True),
    ("example.com", "badexample.com", 443, False),
    ("example.com", "example.com.evil.test", 443, False),
    ("EXAMPLE.com.", "api.Example.COM.", 443, True),
    ("a.test,b.test c.test", "c.test", 443, True),
    ("a.test,b.test c.test", "d.test", 443, False),
    ("*", "anything.test", 443, True),
    ("*", "10.1.2.3", 8000, True),
    ("10.0.0.0/8", "10.1.2.3", 8000, True),
    ("10.0.0.0/8", "11.1.2.3", 8000, False),
    ("10.0.0.0/8", "10.example.test", 8000, False),
    ("127.0.0.1", "127.0.0.1", 8000, True),
    ("127.0.0.1", "localhost", 8000, False),  # names are not resolved
    ("localhost", "127.0.0.1", 8000, False),
    ("", "localhost", 8000, False),  # localhost goes through the proxy unless listed
    ("::1", "::1", 8000, True),
    ("[::1]:8000", "::1", 8000, True),
    ("[::1]:8000", "::1", 8001, False),
    ("example.com:8443", "api.example.com", 8443, True),
    ("example.com:8443", "api.example.com", 443, False),
    ("example.com:443", "example.com", 443, True),  # the scheme's default port counts
    ("example.com:https", "example.com", 443, False),  # an unreadable port: skipped
    (".", "example.com", 443, False),
])
def test_no_proxy_entries_match_as_curl_reads_them(no_proxy: str, host: str, port: int,
                                                    direct: bool) -> None:
    settings = ProxySettings.parse(https="http://proxy:3128", no_proxy=no_proxy)
    assert (settings.proxy_for("https", host, port) is None) is direct
