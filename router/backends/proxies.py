"""HTTP proxies for the upstream client: which proxy carries which origin.

:class:`ProxySettings` reads ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` / ``NO_PROXY``
(the lower-case variable wins when set, as curl and requests do; an empty one means no proxy)
once, when a client is made; :class:`NoProxyRule` matches ``NO_PROXY`` entries as curl reads
them (``*``, domains with their subdomains, IPs and CIDR blocks, ``host:port``, bracketed
IPv6). :mod:`router.backends.http1` uses the :class:`Proxy` chosen for an origin.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from yarl import URL


@dataclass(frozen=True, slots=True)
class Proxy:
    """An ``http://`` proxy: where to connect, and the header line its credentials make."""

    host: str
    port: int
    authorization: bytes = field(default=b"", repr=False)
    """``Proxy-Authorization: Basic …\\r\\n`` when the URL has credentials, else ``b""``."""
    problem: str = ""
    """Why this setting cannot be used, raised (as :class:`ProxyError`) by the requests that
    would go through it; ``""`` when it can."""

    @classmethod
    def parse(cls, url: str, source: str = "proxy") -> Proxy:
        """``http://[user[:password]@]host[:port]``; no scheme means ``http://`` and no port
        means 80 (as in requests and httpx; curl says 1080). ``user`` and ``password`` are
        percent-decoded. ``source`` names the setting in errors, which never show credentials."""
        text = url.strip()
        parsed = URL(text if "://" in text else "http://" + text)
        if parsed.scheme != "http":
            raise ValueError(f"{source}={_redacted(text)!r}: only http:// proxies are supported")
        if not parsed.raw_host:
            raise ValueError(f"{source}={_redacted(text)!r}: no proxy host")
        port = parsed.port
        assert port is not None  # http has a default port
        authorization = b""
        if parsed.user is not None:
            pair = f"{parsed.user}:{parsed.password or ''}".encode()
            authorization = b"Proxy-Authorization: Basic %s\r\n" % base64.b64encode(pair)
        return cls(parsed.raw_host, port, authorization)

    @property
    def name(self) -> str:
        """``http://host:port``, without credentials: for messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def _redacted(url: str) -> str:
    """``url`` with any ``user:password@`` replaced by ``***@``."""
    scheme, separator, rest = url.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{separator}{authority}{slash}{path}"


_IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
"""A ``NO_PROXY`` entry that is an address or a CIDR block."""
_IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
"""A target host that is an IP literal (matched against networks only, never domains)."""


@dataclass(frozen=True, slots=True)
class NoProxyRule:
    """One ``NO_PROXY`` entry: a domain (itself and its subdomains), an IP network, or ``*``;
    with a port, only that port."""

    domain: str = ""
    network: _IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse_list(cls, text: str) -> tuple[NoProxyRule, ...]:
        """Entries separated by commas or spaces, as curl reads them: ``*``, ``example.com`` or
        ``.example.com`` (both: the domain and its subdomains), ``10.0.0.0/8``, ``::1``,
        ``[::1]:8080``, ``host:port``. Names are not resolved: ``localhost`` does not cover
        ``127.0.0.1``. An entry with an unreadable port is skipped."""
        rules = (cls._parse(entry) for entry in re.split(r"[\s,]+", text) if entry)
        return tuple(rule for rule in rules if rule is not None)

    @classmethod
    def _parse(cls, entry: str) -> NoProxyRule | None:
        host, port = entry, ""
        if entry.startswith("["):  # [v6] or [v6]:port
            host, _, port = entry[1:].partition("]")
            port = port.removeprefix(":")
        elif entry.count(":") == 1:
            host, _, port = entry.partition(":")
        if port and not port.isdigit():
            return None
        number = int(port) if port else None
        if host == "*":
            return cls("*", None, number)
        host = host.lower().rstrip(".").removeprefix("*.").lstrip(".")
        try:
            return cls("", ipaddress.ip_network(host, strict=False), number)
        except ValueError:
            return cls(host, None, number) if host else None

    def covers(self, host: str, address: _IPAddress | None, port: int) -> bool:
        """Whether a request to ``host`` (lower-cased; ``address`` when it is an IP) on ``port``
        goes direct."""
        if self.port is not None and self.port != port:
            return False
        if self.domain == "*":
            return True
        if self.network is not None:
            return address is not None and address in self.network
        return address is None and (host == self.domain or host.endswith("." + self.domain))


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """Which proxy a request goes through: one per target scheme, none for the hosts of
    ``no_proxy``. ``ProxySettings()`` is no proxy at all; :meth:`from_env` reads them as curl
    does. Read once, when a client is made (never per request)."""

    http: Proxy | None = None
    https: Proxy | None = None
    no_proxy: tuple[NoProxyRule, ...] = ()

    @classmethod
    def parse(cls, *, http: str | None = None, https: str | None = None,
              no_proxy: str = "") -> ProxySettings:
        """From URLs (an empty one is no proxy) and a ``NO_PROXY``-style list."""
        return cls(Proxy.parse(http, "http proxy") if http and http.strip() else None,
                   Proxy.parse(https, "https proxy") if https and https.strip() else None,
                   NoProxyRule.parse_list(no_proxy))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProxySettings:
        """``http_proxy``, ``https_proxy``, ``all_proxy`` (for a scheme whose own variable is
        unset) and ``no_proxy``; each lower-case name, when set (even empty), wins over its
        upper-case form, as in curl and requests. An empty value is no proxy. A variable this
        client cannot use (``socks5://``, ``https://``) fails the requests it would carry with
        a :class:`ProxyError` naming it, not the others."""
        env = os.environ if environ is None else environ
        fallback = _variable(env, "all_proxy")

        def proxy(scheme: str) -> Proxy | None:
            found = _variable(env, f"{scheme}_proxy") or fallback
            if found is None or not found[1].strip():
                return None
            try:
                return Proxy.parse(found[1], found[0])
            except ValueError as exc:  # maybe set for other tools: fail only what it would carry
                return Proxy("", 0, problem=str(exc))

        no_proxy = _variable(env, "no_proxy")
        return cls(proxy("http"), proxy("https"),
                   NoProxyRule.parse_list(no_proxy[1] if no_proxy else ""))

    def proxy_for(self, scheme: str, host: str, port: int) -> Proxy | None:
        """The proxy for a request to ``scheme://host:port``, or ``None`` to go direct."""
        proxy = self.https if scheme == "https" else self.http
        if proxy is None or not self.no_proxy:
            return proxy
        host = host.lower().rstrip(".")
        try:
            address: _IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if any(rule.covers(host, address, port) for rule in self.no_proxy):
            return None
        return proxy


def _variable(environ: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(name, value)`` of the lower-case variable if set, else of the upper-case one."""
    for key in (name, name.upper()):
        value = environ.get(key)
        if value is not None:
            return key, value
    return None
