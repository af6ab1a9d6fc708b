"""Where a webhook may be sent: public addresses only (no server-side request forgery into the private network),
unless IMAGEN_WEBHOOKS_ALLOW_PRIVATE=true (local testing). Checked when an endpoint is created and again before
every request, redirects included, since a name's addresses can change."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class RefusedTarget(ValueError):
    pass


def check_url(url: str, *, allow_private: bool, resolve: bool = True) -> None:
    """Raise `RefusedTarget` saying why, for a URL that is not http(s), has credentials, or whose host resolves to
    a private, loopback, link-local or otherwise non-global address."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise RefusedTarget("not a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise RefusedTarget("the URL must start with https:// (or http://)")
    if not parts.hostname:
        raise RefusedTarget("the URL has no host")
    if parts.username or parts.password:
        raise RefusedTarget("the URL must not carry credentials")
    if allow_private:
        return
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        if not resolve:
            return
        try:
            infos = socket.getaddrinfo(host, port or (443 if parts.scheme == "https" else 80),
                                       type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise RefusedTarget(f"the host {host!r} does not resolve") from None
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not address.is_global or address.is_multicast:
            raise RefusedTarget(f"{host!r} is a private or loopback address; webhooks go to public addresses only")
