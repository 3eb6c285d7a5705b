"""Sending one signed POST without letting a webhook URL reach inside the
network (server-side request forgery).

The host is resolved here and every address it resolves to is checked;
the connection then goes to the checked address itself (the name travels
in the Host header and TLS SNI), so a second DNS answer cannot swap in
another one. Redirects are followed here, hop by hop, each checked the
same way. MIRAGE_WEBHOOK_ALLOW_PRIVATE lifts the address check (a
receiver on the same host or network).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx
from django.conf import settings

MAX_REDIRECTS = 5
EXCERPT_CHARS = 1000
REDIRECT_CODES = {301, 302, 303, 307, 308}
# Cloud metadata services that are not in a private or link-local range.
METADATA_ADDRESSES = {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}


class UnsafeUrl(Exception):
    """The URL is not http(s), has no host, or reaches an address webhooks
    may not (loopback, private, link-local, metadata...)."""


@dataclass
class Outcome:
    url: str
    status_code: int | None = None
    latency_ms: int | None = None
    response_excerpt: str = ""
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def address_refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why webhooks may not reach `address`, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    for test, words in (
        ("is_loopback", "a loopback address"),
        ("is_link_local", "a link-local address (this includes the cloud metadata service)"),
        ("is_private", "a private address"),
        ("is_multicast", "a multicast address"),
        ("is_unspecified", "an unspecified address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(address, test):
            return words
    if not address.is_global:
        return "not a public address"
    return None


def check_url_syntax(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; UnsafeUrl otherwise. A host
    written as an IP address is checked here too (no DNS needed)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("the URL must be http or https")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeUrl("the URL may not carry credentials")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl("the URL's port is not valid") from None
    host = parts.hostname
    if not settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE:
        if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost"):
            raise UnsafeUrl(f"{host} is a loopback name")
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None and (why := address_refusal(literal)):
            raise UnsafeUrl(f"{host} is {why}")
    return parts.scheme, host, port


def resolve_checked(url: str) -> tuple[str, str]:
    """Resolve the URL's host and check every address; returns (the URL
    with the first address in place of the host, the host)."""
    scheme, host, port = check_url_syntax(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeUrl(f"{host} does not resolve: {exc}") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    if not addresses:
        raise UnsafeUrl(f"{host} does not resolve")
    if not settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE:
        for address in addresses:
            if why := address_refusal(address):
                raise UnsafeUrl(f"{host} resolves to {address}, {why}")
    address = addresses[0]
    netloc = f"[{address}]" if address.version == 6 else str(address)
    parts = urlsplit(url)
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, "")), host


def post(*, url: str, body: str, headers: dict[str, str]) -> Outcome:
    """POST `body` to `url`, following up to MAX_REDIRECTS redirects (the
    same signed POST each time), with MIRAGE_WEBHOOK_TIMEOUT_SECONDS for
    each hop. Never raises for network trouble: the outcome says what
    happened."""
    timeout = httpx.Timeout(settings.MIRAGE_WEBHOOK_TIMEOUT_SECONDS)
    started = time.monotonic()
    current = url
    with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            try:
                target, host = resolve_checked(current)
            except UnsafeUrl as exc:
                return Outcome(url=current, error=f"refused: {exc}")
            parts = urlsplit(current)
            host_header = host if not parts.port else f"{host}:{parts.port}"
            try:
                with client.stream(
                    "POST",
                    target,
                    content=body.encode(),
                    headers={**headers, "host": host_header},
                    extensions={"sni_hostname": host},
                ) as response:
                    excerpt = _read_excerpt(response)
            except httpx.HTTPError as exc:
                return Outcome(
                    url=current, latency_ms=_elapsed(started), error=f"{type(exc).__name__}: {exc}"[:EXCERPT_CHARS]
                )
            location = response.headers.get("location")
            if response.status_code in REDIRECT_CODES and location:
                current = urljoin(current, location)
                continue
            return Outcome(
                url=current, status_code=response.status_code, latency_ms=_elapsed(started), response_excerpt=excerpt
            )
    return Outcome(url=current, latency_ms=_elapsed(started), error=f"more than {MAX_REDIRECTS} redirects")


def _read_excerpt(response: httpx.Response) -> str:
    """The start of the answer; a receiver that streams megabytes back is
    not read to its end."""
    data = b""
    for block in response.iter_bytes():
        data += block
        if len(data) >= EXCERPT_CHARS * 4:
            break
    return data.decode("utf-8", errors="replace")[:EXCERPT_CHARS]


def _elapsed(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
