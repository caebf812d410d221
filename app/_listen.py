"""Serving an ASGI app on a socket: the one start-up path of ``serve api``, ``serve mcp
--transport http`` and ``ui``.

The socket is bound first, so the app can be told its real address (port 0 picks a
free one) and a port in use is a clear error before anything starts; the ready line
is printed only once the socket listens, so a client that waits for it can connect.

Every server binds here, so every server follows one rule (``concilium.serving``'s
``check_bind``): off the default address 127.0.0.1 an API key is needed; the app is
then built with :attr:`Listener.address`, and answers only requests whose ``Host``
and ``Origin`` name that address.

Example:
    >>> listener = Listener.bind("127.0.0.1", 0)
    >>> listener.port > 0, listener.url("/v1").startswith("http://127.0.0.1:")
    (True, True)
    >>> listener.close()
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any, Literal

from concilium._errors import UserError

__all__ = ["Listener"]


class Listener:
    """A bound TCP socket and the uvicorn server that serves an app on it."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host
        self.port: int = sock.getsockname()[1]

    @classmethod
    def bind(cls, host: str, port: int, *, api_key: str | None = None) -> Listener:
        """Bind ``host:port`` (``0``: a free port), where ``api_key`` allows it.

        Raises:
            UserError: the address needs an API key and ``api_key`` is none or short
                (see ``check_bind``); the address cannot be bound (in use, not this
                machine's).
        """
        from concilium.serving import check_bind

        check_bind(host, api_key)
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise UserError(
                f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port, "
                "or 0 for a free one"
            ) from None
        return cls(sock, host)

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` as bound: what the app answers to (``create_app(bind=...)``)."""
        return self.host, self.port

    def url(self, path: str = "/") -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{shown}:{self.port}{path}"

    async def serve(
        self,
        app: Any,
        *,
        ready: str,
        say: Callable[[str], None],
        lifespan: Literal["on", "off", "auto"] = "off",
    ) -> None:
        """Serve ``app`` until stopped (Ctrl-C or SIGTERM, after which it returns, so
        the caller closes what it owns); ``say(ready)`` once the socket listens."""
        import uvicorn

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if not self.should_exit:  # the socket listens now: clients may connect
                    say(ready)

            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                # uvicorn re-raises the SIGTERM or Ctrl-C that stopped it once serving
                # ends; SIGTERM's default action would then end this process before the
                # caller's session closes its engine, servers and state store. A server
                # stopped by a signal returns instead.
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                stops = (signal.SIGINT, signal.SIGTERM)
                before = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
                try:
                    yield
                finally:
                    for sig, handler in before.items():
                        signal.signal(sig, handler)

        config = uvicorn.Config(app, log_level="warning", lifespan=lifespan)
        await Server(config).serve(sockets=[self.sock])

    def close(self) -> None:
        self.sock.close()
