"""``SimServer``: the simulated server on loopback, in this process or in its own.

In-process is cheap and is what most tests use; ``process=True`` runs it in a
separate Python process so its CPU does not compete with the client's event loop
(benchmarks).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web

from concilium._errors import UserError
from concilium.agents import Capabilities, ModelSpec
from concilium.agents.sim import SimConfig

from ._process import ManagedProcess
from ._sim import SimApp

READY_PREFIX = "concilium simulated server (a test double, not a model) listening on"


def check_loopback(host: str) -> None:
    try:
        ok = ipaddress.ip_address(host).is_loopback
    except ValueError:
        ok = host == "localhost"
    if not ok:
        raise UserError(
            f"host {host!r} is not a loopback address; the simulated server only binds "
            "to 127.0.0.1 (or ::1)"
        )


async def start_app(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve ``app`` on host:port (0 = any free port); returns the runner and base URL."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
            "(0 picks a free one)"
        ) from exc
    bound_host, bound_port = runner.addresses[0][:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return runner, f"http://{shown}:{bound_port}"


class SimServer:
    """The simulated OpenAI/vLLM server as an async context manager.

    Example:
        >>> async def demo():
        ...     async with SimServer(SimConfig(seed=1)) as sim:
        ...         return sim.url.startswith("http://127.0.0.1:")
        >>> asyncio.run(demo())
        True
    """

    def __init__(
        self,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        process: bool = False,
        deadline: float = 30.0,
    ):
        check_loopback(host)
        self.config = config or SimConfig()
        self.host = host
        self.port = port
        self.process = process
        self.deadline = deadline
        self.url = ""
        self.app: SimApp | None = None
        self._runner: web.AppRunner | None = None
        self._proc: ManagedProcess | None = None

    def spec(self, **kwargs: Any) -> ModelSpec:
        """A ``ModelSpec`` pointing at this server."""
        kwargs.setdefault(
            "capabilities", Capabilities(n=True, logprobs=True, structured_output=False)
        )
        return ModelSpec(f"hosted_vllm/{self.config.model}", api_base=self.url, **kwargs)

    async def __aenter__(self) -> SimServer:
        if self.process:
            argv = [
                sys.executable, "-P", "-m", "concilium", "serve", "sim",
                "--host", self.host, "--port", str(self.port),
                "--config-json", self.config.model_dump_json(),
            ]  # fmt: skip
            self._proc = ManagedProcess(
                "simulated server",
                argv,
                ready_pattern=r"listening on (?P<url>http://\S+)",
                health_url="{url}/health",
                deadline=self.deadline,
            )
            await self._proc.start()
            self.url = self._proc.url or ""
        else:
            self.app = SimApp(self.config)
            self._runner, base = await start_app(self.app.app, self.host, self.port)
            self.url = f"{base}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None:
            await self._proc.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base(self) -> str:
        return self.url.removesuffix("/v1")

    async def _get(self, path: str) -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.get(self.base + path) as resp:
                return await resp.json()

    async def stats(self) -> dict[str, Any]:
        """Counters: requests, max_in_flight, tokens, cancelled, by_agent, ..."""
        return await self._get("/sim/stats")

    async def requests(self) -> list[dict[str, Any]]:
        """Every request received: ``{"agent", "endpoint", "body"}``, in arrival order."""
        return await self._get("/sim/requests")

    async def reset(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(self.base + "/sim/reset") as resp:
                resp.raise_for_status()

    def kill(self) -> None:
        """Kill a ``process=True`` server at once (failure tests)."""
        if self._proc is not None:
            self._proc.kill()


async def serve_forever(config: SimConfig, host: str, port: int) -> None:
    """Run the simulated server until SIGINT/SIGTERM (``concilium serve sim``)."""
    check_loopback(host)
    app = SimApp(config)
    runner, base = await start_app(app.app, host, port)
    print(f"{READY_PREFIX} {base}/v1", flush=True)
    print(
        f"model {config.model!r}; answers are simulated: {json.dumps(config.statistical.model_dump())}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
