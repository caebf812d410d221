"""Where models run and graphs are served: the simulated server (a test double),
server subprocesses, and the embedded engine (vLLM's CPU build serving Gemma 3 270M).

Example:
    >>> from concilium.serving import SimConfig, SimServer
    >>> SimConfig().model
    'concilium-sim'
"""

from ._api import check_bind, create_app
from ._cluster import (
    FAMILIES,
    ClusterSpec,
    Deployment,
    Family,
    family_of,
    launch_cluster,
    load_cluster_spec,
    plan_replicas,
    pool_config,
    vllm_command,
)
from ._engine import LocalEngine, local_engine
from ._engine_install import ENGINE_MODEL, EngineHome, engine_pins, install_engine
from ._mcp_server import create_mcp_server, mcp_http_app, mcp_result
from ._process import ManagedProcess
from ._sim import SimApp
from ._sim_config import Faults, Latency, Rule, SimConfig, Statistical
from ._sim_model import SimulatedModel
from ._sim_server import SimServer, serve_forever, start_app

__all__ = [
    # simulated server (test double)
    "SimServer",
    "SimConfig",
    "Latency",
    "Rule",
    "Statistical",
    "Faults",
    "SimApp",
    "SimulatedModel",
    "serve_forever",
    "start_app",
    # processes
    "ManagedProcess",
    # the vLLM cluster launcher
    "ClusterSpec",
    "Deployment",
    "Family",
    "FAMILIES",
    "family_of",
    "plan_replicas",
    "pool_config",
    "vllm_command",
    "launch_cluster",
    "load_cluster_spec",
    # workflows as OpenAI-compatible models
    "create_app",
    "check_bind",
    # workflows as MCP tools (concilium serve mcp)
    "create_mcp_server",
    "mcp_http_app",
    "mcp_result",
    # the embedded engine: installing it
    "EngineHome",
    "install_engine",
    "engine_pins",
    "ENGINE_MODEL",
    # the embedded engine: running it
    "LocalEngine",
    "local_engine",
]
