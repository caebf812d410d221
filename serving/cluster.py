"""A local cluster of vLLM servers, one replica per GPU group (``concilium serve
vllm``): a ``ClusterSpec`` (from options or a cluster file), launched until
cancelled, with the ``models:`` section for workflows written beside it; a model
with several replicas behind ``vllm-router`` (``run_router``), whose one URL the
pool file holds.

Example:
    >>> from concilium.serving.cluster import ClusterSpec
    >>> spec = ClusterSpec.model_validate(
    ...     {"models": [{"name": "q", "model": "Qwen/Qwen3-8B", "gpus": [0, 1]}]}
    ... )
    >>> spec.models[0].name, spec.models[0].gpus
    ('q', [0, 1])
"""

from ._cluster import ClusterSpec, launch_cluster, load_cluster_spec
from ._metrics import read_metrics
from ._router import ROUTED_REPLICA_ARGS, Router, router_binary, run_router

__all__ = [
    "ClusterSpec",
    "load_cluster_spec",
    "launch_cluster",
    "Router",
    "router_binary",
    "run_router",
    "ROUTED_REPLICA_ARGS",
    "read_metrics",
]
