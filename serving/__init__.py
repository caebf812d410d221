"""Where models run and graphs are served: the simulated server (a test double),
server subprocesses, and the embedded engine (vLLM's CPU build serving Gemma 3 270M).

Example:
    >>> import asyncio
    >>> from concilium.agents.sim import SimConfig
    >>> from concilium.serving import SimServer
    >>> async def served_model():
    ...     async with SimServer(SimConfig(seed=1)) as server:
    ...         return server.spec().model
    >>> asyncio.run(served_model())
    'hosted_vllm/concilium-sim'
"""

from . import cluster, engine
from ._api import create_app
from ._bind import check_bind
from ._mcp_server import create_mcp_server, mcp_http_app
from ._process import ManagedProcess
from ._sim_server import SimServer, serve_forever

__all__ = [
    # the simulated server (a test double)
    "SimServer",
    "serve_forever",
    # workflows as OpenAI-compatible models (concilium serve api) and as MCP tools
    "create_app",
    "check_bind",
    "create_mcp_server",
    "mcp_http_app",
    # a server subprocess, ready when it answers /health
    "ManagedProcess",
    # the embedded engine (vLLM's CPU build) and a local vLLM cluster
    "engine",
    "cluster",
]
