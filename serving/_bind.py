"""Where a server may listen and whom it answers: one rule for ``serve api``, ``ui`` and
``serve mcp --transport http``.

* **The key.** Only the default address, ``127.0.0.1`` (also spelled ``localhost`` or
  ``::1``), serves without an API key. Any other address needs one of at least 16
  characters: beyond loopback anyone on the network could spend the models' compute,
  and another loopback address (``127.0.0.2``, one a container or a port forward
  reaches) is chosen because something else is meant to reach it.
* **Host and Origin.** A server answers a request whose ``Host`` names the address it
  listens on (``HOST:PORT``; on the default address also ``127.0.0.1``, ``localhost``
  and ``[::1]`` with that port), and refuses any other, so a web page cannot reach it
  through DNS rebinding. A browser's ``Origin`` must be the server itself, so no other
  site can post to it. On a wildcard address (``0.0.0.0``, ``::``) the server has no
  one name: any ``Host`` is answered there (the key guards it), and ``Origin`` must
  still match it.

Example:
    >>> sorted(allowed_hosts("127.0.0.2", 8080))
    ['127.0.0.2:8080']
    >>> refusal("evil.example:8080", None, allowed_hosts("127.0.0.1", 8080))[0]
    'host_not_allowed'
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from concilium._errors import UserError

__all__ = ["MIN_KEY_LENGTH", "allowed_hosts", "check_bind", "host_guard", "is_default", "refusal"]

MIN_KEY_LENGTH = 16  # characters of an API key that guards a server off the default address
_DEFAULTS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_DEFAULT_NAMES = ("127.0.0.1", "localhost", "[::1]")  # how a client names the default address
_WILDCARDS = ("", "0.0.0.0", "::")

Asgi = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]


def is_default(host: str) -> bool:
    """Whether ``host`` is the default address: 127.0.0.1, ``localhost`` or ::1."""
    try:
        return ipaddress.ip_address(host.strip("[]")) in _DEFAULTS
    except ValueError:
        return host.lower() == "localhost"


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen off the default address without a real API key, and refuse a
    blank key anywhere.

    Raises:
        UserError: off 127.0.0.1 (localhost, ::1) without a key or with one shorter
            than 16 characters; anywhere with a key of only spaces. It says the fix.

    Example:
        >>> check_bind("127.0.0.1", None)
        >>> check_bind("127.0.0.2", None)
        Traceback (most recent call last):
        ...
        concilium._errors.UserError: refusing to serve on 127.0.0.2 without an API key: ...
    """
    make_one = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
    if api_key and not api_key.strip():
        raise UserError(f"--api-key is blank; give a real key ({make_one}) or none on 127.0.0.1")
    if is_default(host):
        return
    if not api_key:
        raise UserError(
            f"refusing to serve on {host} without an API key: only the default address "
            "127.0.0.1 (localhost, ::1) serves without one, since whatever can reach another "
            "address could spend your models' compute; pass --api-key KEY (or "
            "CONCILIUM_API_KEY), or bind 127.0.0.1"
        )
    if len(api_key.strip()) < MIN_KEY_LENGTH:
        raise UserError(
            f"--api-key is {len(api_key.strip())} characters; serving on {host} needs "
            f"at least {MIN_KEY_LENGTH} ({make_one}), or bind 127.0.0.1"
        )


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` values a server listening on ``host:port`` answers (lower case);
    ``None`` on a wildcard address, which has no one name."""
    host = host.strip("[]").lower()
    if host in _WILDCARDS:
        return None
    names = {f"[{host}]" if ":" in host else host}
    if is_default(host):
        names.update(_DEFAULT_NAMES)
    # a browser leaves the port out of Host when it is the scheme's default
    return frozenset({f"{name}:{port}" for name in names} | (names if port == 80 else set()))


def refusal(host: str | None, origin: str | None, hosts: frozenset[str] | None) -> tuple[str, str] | None:  # fmt: skip
    """``(code, message)`` when a request's ``Host`` or ``Origin`` header is foreign to a
    server that answers ``hosts`` (from :func:`allowed_hosts`); ``None`` when it may pass."""
    host = (host or "").lower()
    if hosts is not None and host not in hosts:
        return (
            "host_not_allowed",
            f"this server answers to {sorted(hosts)} only, not Host {host[:100]!r}; use one of "
            "those addresses (to answer to any name, bind 0.0.0.0 with an API key)",
        )
    if origin is not None and origin.lower().partition("://")[2].rstrip("/") != host:
        return (
            "origin_not_allowed",
            f"cross-origin requests are refused (Origin {origin[:100]!r}, Host {host[:100]!r}); "
            "call the server from a program or from its own pages",
        )
    return None


def host_guard(app: Asgi, hosts: frozenset[str] | None) -> Asgi:
    """Wrap an ASGI app so an HTTP request with a foreign ``Host`` or ``Origin`` gets 403
    with the reason as plain text (the MCP app; ``serve api`` and ``ui`` answer in the
    OpenAI error format through their own middleware, by the same :func:`refusal`)."""

    async def guarded(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            refused = refusal(headers.get("host"), headers.get("origin"), hosts)
            if refused is not None:
                start = {"type": "http.response.start", "status": 403}
                await send({**start, "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
                await send({"type": "http.response.body", "body": f"{refused[1]}\n".encode()})
                return
        await app(scope, receive, send)

    return guarded
