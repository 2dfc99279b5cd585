"""The egress policy for every host-side fetch (web search, page visits): which hosts tools may reach.

The sandbox never has network; tools on the host do, so this is where server-side request forgery is
stopped. A URL is refused when its host is denied or not allowed by the domain lists ("deny" wins), or
when any address it is connected to is not a public unicast address (loopback, private, link-local,
CGNAT, cloud metadata, unique-local, IPv4-mapped/NAT64/6to4 forms of those, integer/octal/hex IPv4
spellings), unless the host or address is listed in `allow_private`.

The check is made on the address that is actually connected to: aiohttp is given a resolver that
resolves once, refuses disallowed addresses and hands back only the checked ones, so a name that
resolves to a public address for the check and a private one for the connection (DNS rebinding) cannot
slip through. Redirects are followed here, one at a time, and every hop is checked again.
"""
from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import socket
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

MAX_REDIRECTS = 5
_USER_AGENT = "Mozilla/5.0 (compatible; agentdesk)"
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host -> addresses; the default asks the system resolver. Tests inject their own.
Resolve = Callable[[str], list[str]]


class EgressRefused(RuntimeError):
    """A fetch the policy does not allow; the message is meant for the model (and the person)."""


class FetchFailed(RuntimeError):
    """The fetch was allowed but did not succeed (unreachable, HTTP error, too large, wrong type)."""


def _system_resolve(host: str) -> list[str]:
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address, including spellings browsers and libc accept: 2130706433, 0x7f.1, 0177.0.0.1."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """A globally routable unicast address (and so is any IPv4 address embedded in it)."""
    inner = _embedded_ipv4(ip)
    if inner is not None and not is_public(inner):
        return False
    return ip.is_global and not ip.is_multicast


def _domain_matches(host: str, pattern: str) -> bool:
    pattern = pattern.lower().rstrip(".")
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


@dataclass(frozen=True)
class EgressPolicy:
    """The `[egress]` table of the departments file."""

    allow_domains: tuple[str, ...] = ("*",)
    deny_domains: tuple[str, ...] = ()
    allow_private: tuple[str, ...] = ()
    resolve: Resolve = field(default=_system_resolve, compare=False, repr=False)

    def _private_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        networks = []
        for entry in self.allow_private:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                continue
        return networks

    def check_host(self, host: str) -> None:
        """Domain lists and literal addresses; raises EgressRefused."""
        host = host.lower().rstrip(".").strip("[]")
        if not host:
            raise EgressRefused("refused: the URL has no host")
        if any(_domain_matches(host, p) for p in self.deny_domains):
            raise EgressRefused(f"refused: {host} is on the egress deny list of this bot")
        if not any(_domain_matches(host, p) for p in self.allow_domains):
            raise EgressRefused(f"refused: {host} is not on the egress allow list of this bot")
        ip = parse_ip(host)
        if ip is not None:
            self.check_address(host, str(ip))

    def check_address(self, host: str, address: str) -> None:
        """An address `host` resolved to, before it is connected to; raises EgressRefused."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if is_public(ip):
            return
        host = host.lower().rstrip(".").strip("[]")
        if host in {e.lower() for e in self.allow_private}:
            return
        candidates = [c for c in (ip, _embedded_ipv4(ip)) if c is not None]
        if any(c.version == net.version and c in net for c in candidates for net in self._private_networks()):
            return
        what = "the cloud metadata service" if str(_embedded_ipv4(ip) or ip) in {"169.254.169.254", "fd00:ec2::254"} \
            else "a private, loopback or link-local address"
        shown = host if parse_ip(host) is not None else f"{host} ({ip})"
        raise EgressRefused(
            f"refused: {shown} is {what}; tools on this bot may only reach public addresses "
            "(an operator can list an intranet host in [egress] allow_private)"
        )

    def check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise EgressRefused(f"refused: only http and https URLs can be fetched, not {parts.scheme or 'this'!r}")
        self.check_host(parts.hostname or "")


class _PolicyResolver(AbstractResolver):
    """Resolves once, keeps only the addresses the policy allows; aiohttp connects to exactly those."""

    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        try:
            addresses = await asyncio.to_thread(self.policy.resolve, host)
        except OSError as exc:
            raise FetchFailed(f"{host} could not be resolved ({exc})") from None
        if not addresses:
            raise FetchFailed(f"{host} could not be resolved")
        for address in addresses:  # every address: a mixed answer is a rebinding attempt
            self.policy.check_address(host, address)
        return [
            ResolveResult(hostname=host, host=address, port=port,
                          family=socket.AF_INET6 if ":" in address else socket.AF_INET, proto=0,
                          flags=socket.AI_NUMERICHOST)
            for address in addresses
        ]

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Response:
    url: str
    status: int
    content_type: str
    body: bytes
    truncated: bool


async def _fetch(url: str, policy: EgressPolicy, *, params: dict | None, headers: dict[str, str], method: str,
                 json_body: Any, max_bytes: int, timeout_s: float, content_types: tuple[str, ...] | None) -> Response:
    connector = aiohttp.TCPConnector(resolver=_PolicyResolver(policy), use_dns_cache=False, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, trust_env=False) as session:
        for _ in range(MAX_REDIRECTS + 1):
            policy.check_url(url)
            async with session.request(method, url, params=params, headers={"User-Agent": _USER_AGENT, **headers},
                                       json=json_body, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
                    url = urljoin(str(response.url), response.headers["Location"])
                    params = None
                    if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                        method, json_body = "GET", None
                    continue
                content_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
                if content_types is not None and content_type not in content_types:
                    raise FetchFailed(f"{url} is {content_type or 'of an unknown type'}, which cannot be read as text "
                                      f"(readable: {', '.join(content_types)})")
                body = await response.content.read(max_bytes + 1)
                return Response(str(response.url), response.status, content_type, body[:max_bytes],
                                truncated=len(body) > max_bytes)
    raise FetchFailed(f"stopped after {MAX_REDIRECTS} redirects")


def fetch(url: str, *, policy: EgressPolicy | None = None, params: dict | None = None,
          headers: dict[str, str] | None = None, method: str = "GET", json_body: Any = None,
          max_bytes: int = 2_000_000, timeout_s: float = 15.0,
          content_types: tuple[str, ...] | None = None) -> Response:
    """Fetch `url` under the policy (blocking; tools call it from their worker thread).

    Raises EgressRefused when the policy forbids a hop, FetchFailed for everything else that went wrong.
    """
    policy = policy or current_policy()
    try:
        return asyncio.run(_fetch(url, policy, params=params, headers=headers or {}, method=method,
                                  json_body=json_body, max_bytes=max_bytes, timeout_s=timeout_s,
                                  content_types=content_types))
    except (EgressRefused, FetchFailed):
        raise
    except asyncio.TimeoutError:
        raise FetchFailed(f"{urlsplit(url).hostname} did not answer within {timeout_s:g} s") from None
    except aiohttp.ClientConnectorError as exc:
        inner = exc.__cause__ or exc.__context__
        if isinstance(inner, (EgressRefused, FetchFailed)):
            raise inner from None
        raise FetchFailed(f"{urlsplit(url).hostname} is unreachable ({exc.os_error or exc})") from None
    except aiohttp.ClientError as exc:
        raise FetchFailed(f"{urlsplit(url).hostname}: {type(exc).__name__}: {exc}") from None


# -- the policy of the running department (bound like the caller) ----------------------------------------

_policy: contextvars.ContextVar[EgressPolicy | None] = contextvars.ContextVar("agentdesk_egress", default=None)


def current_policy() -> EgressPolicy:
    """The company's [egress] policy bound for the running tool; the default (public internet only) otherwise."""
    return _policy.get() or EgressPolicy()


@contextmanager
def bind_policy(policy: EgressPolicy | None) -> Iterator[None]:
    token = _policy.set(policy)
    try:
        yield
    finally:
        _policy.reset(token)
