"""Launch and supervise a local cluster of vLLM servers (``concilium serve vllm``).

A cluster spec names models; each model gets one ``vllm serve`` process per group of
GPUs (``tensor_parallel_size`` GPUs per group, ``CUDA_VISIBLE_DEVICES`` set), on
loopback ports. The launcher waits on each ``/health`` with a deadline (a replica
that fails reports the last lines it printed), writes the model-pool YAML a workflow
can paste under ``models:``, restarts a replica that dies or hangs (the embedded
engine's supervisor: at most ``max_restarts`` times within 10 minutes, each replica's
whole output in ``logs``, kept when it dies), and stops everything on exit or signal. The capability registry fills in
what each model family needs (tool-call parser, system-message handling, ``n``,
logprobs). A model with several replicas gets ``vllm-router`` in front of them
(``router:``, its policy; ``null`` routes on the client), and the pool file holds the
router's one URL. ``server: engine`` runs the embedded CPU engine instead of ``vllm serve``
(how this is proven on machines without a GPU); ``server: sim`` runs the simulated
server, a test double.

Example:
    >>> spec = ClusterSpec.model_validate(
    ...     {
    ...         "models": [
    ...             {
    ...                 "name": "qwen",
    ...                 "model": "Qwen/Qwen3-8B",
    ...                 "gpus": [0, 1, 2, 3],
    ...                 "tensor_parallel_size": 2,
    ...             }
    ...         ]
    ...     }
    ... )
    >>> [(r.gpus, r.port) for r in plan_replicas(spec, ports=iter([8001, 8002]))]
    [((0, 1), 8001), ((2, 3), 8002)]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from concilium._errors import UserError

from ._engine import core_groups, engine_command, engine_env, free_port, log_path
from ._engine_install import EngineHome
from ._process import ManagedProcess
from ._router import DEFAULT_POLICY, ROUTED_REPLICA_ARGS, Router, router_binary, run_router
from ._supervisor import Supervisor


@dataclass(frozen=True)
class Family:
    """What a model family needs from the server and can do for a client."""

    tool_call_parser: str | None = None
    several_system_messages: bool = True  # the chat template accepts more than one
    n: bool = True
    logprobs: bool = True


# substring of the lower-cased model id -> family; first match wins
FAMILIES: list[tuple[str, Family]] = [
    ("qwen3", Family(tool_call_parser="hermes")),
    ("qwen2.5", Family(tool_call_parser="hermes")),
    ("llama-3", Family(tool_call_parser="llama3_json")),
    ("llama-4", Family(tool_call_parser="llama4_pythonic")),
    ("mistral", Family(tool_call_parser="mistral", several_system_messages=False)),
    ("deepseek-v3", Family(tool_call_parser="deepseek_v3")),
    ("gpt-oss", Family(tool_call_parser="openai")),
    ("granite", Family(tool_call_parser="granite")),
    ("hermes", Family(tool_call_parser="hermes")),
    ("gemma", Family(tool_call_parser=None, several_system_messages=False)),
]


def family_of(model: str) -> Family:
    """The capability entry for a model id (a default one when no family matches)."""
    lowered = model.lower()
    return next((f for key, f in FAMILIES if key in lowered), Family())


class Deployment(BaseModel):
    """One model of the cluster."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="the served model name workflows use")
    model: str = Field(description="Hugging Face id or local folder")
    server: Literal["vllm", "engine", "sim"] = "vllm"
    gpus: list[int] = Field(default_factory=list, description="GPU indices; empty for CPU servers")
    tensor_parallel_size: int = Field(default=1, ge=1)
    replicas: int | None = Field(
        default=None, ge=1, description="default: one per GPU group (or 1)"
    )
    max_model_len: int | None = Field(default=None, ge=1)
    tool_call_parser: str | None = Field(default=None, description="default: from the model family")
    chat_template: str | None = None
    speculative_config: dict[str, Any] | None = Field(
        default=None, description="passed to --speculative-config"
    )
    extra_args: list[str] = Field(default_factory=list)
    port: int = Field(default=0, ge=0, le=65535, description="first port; 0 picks free ports")


class ClusterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[Deployment] = Field(min_length=1)
    deadline: float = Field(
        default=900.0, gt=0, description="seconds for every replica to answer /health"
    )
    max_restarts: int = Field(
        default=3, ge=0, description="restarts of one replica within 10 minutes; 0 never restarts"
    )
    logs: str | None = Field(
        default=None,
        description="folder of the replicas' logs (default ~/.cache/concilium/cluster/logs)",
    )
    router: Literal["cache_aware", "consistent_hash", "power_of_two", "round_robin"] | None = Field(
        default="cache_aware",
        description="vllm-router's policy in front of a model's replicas; null routes on the client",
    )


@dataclass
class ReplicaPlan:
    deployment: Deployment
    index: int
    gpus: tuple[int, ...]
    port: int
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def label(self) -> str:
        where = f"GPUs {','.join(map(str, self.gpus))}" if self.gpus else "CPU"
        return f"{self.deployment.name} replica {self.index} (port {self.port}, {where})"


def vllm_command(d: Deployment, port: int) -> list[str]:
    """The exact ``vllm serve`` command of one replica."""
    argv = [
        "vllm",
        "serve",
        d.model,
        "--served-model-name",
        d.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    if d.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(d.tensor_parallel_size)]
    if d.max_model_len:
        argv += ["--max-model-len", str(d.max_model_len)]
    parser = d.tool_call_parser or family_of(d.model).tool_call_parser
    if parser:
        argv += ["--enable-auto-tool-choice", "--tool-call-parser", parser]
    if d.chat_template:
        argv += ["--chat-template", d.chat_template]
    return argv + _server_options(d)


def _server_options(d: Deployment) -> list[str]:
    """The options every server kind that is vLLM (``vllm`` and ``engine``) takes from
    the file: the speculative-decoding config, then ``extra_args``."""
    spec = d.speculative_config
    head = ["--speculative-config", json.dumps(spec, separators=(",", ":"))] if spec else []
    return head + list(d.extra_args)


def plan_replicas(
    spec: ClusterSpec, ports: Iterator[int] | None = None, home: EngineHome | None = None
) -> list[ReplicaPlan]:
    """Every replica's GPUs, port, command and environment."""
    plans = []
    for d in spec.models:
        tp = d.tensor_parallel_size
        if d.gpus and len(d.gpus) % tp:
            raise UserError(
                f"model {d.name!r}: {len(d.gpus)} GPUs do not split into groups of tensor_parallel_size={tp}"
            )
        groups = [tuple(d.gpus[i : i + tp]) for i in range(0, len(d.gpus), tp)] or [()]
        count = d.replicas or len(groups)
        cores = core_groups(count, sorted(os.sched_getaffinity(0))) if d.server == "engine" else []
        if d.gpus and count > len(groups):
            raise UserError(
                f"model {d.name!r}: {count} replicas need {count * tp} GPUs, {len(d.gpus)} given"
            )
        for i in range(count):
            port = next(ports) if ports is not None else (d.port + i if d.port else free_port())
            plan = ReplicaPlan(d, i, groups[i % len(groups)], port)
            if d.server == "vllm":
                plan.argv = vllm_command(d, port)
                plan.env = (
                    {"CUDA_VISIBLE_DEVICES": ",".join(map(str, plan.gpus))} if plan.gpus else {}
                )
            elif d.server == "engine":
                engine = home or EngineHome()
                routed = ROUTED_REPLICA_ARGS if spec.router and count > 1 else ()
                plan.argv = engine_command(engine, port, [d.name], [*_server_options(d), *routed])
                engine.require()
                plan.env = engine_env(engine, cores[i], 2 if count == 1 else 1)
            else:  # the simulated server: a test double
                config = json.dumps({"model": d.name, "latency": {"fixed": 0.05}})
                plan.argv = [
                    sys.executable,
                    "-P",
                    "-m",
                    "concilium",
                    "serve",
                    "sim",
                    "--port",
                    str(port),
                    "--config-json",
                    config,
                ]
            plans.append(plan)
    return plans


def pool_config(
    spec: ClusterSpec, plans: list[ReplicaPlan], routers: dict[str, str] | None = None
) -> dict[str, Any]:
    """The ``models:`` section a workflow can use: one entry per model, its router's one
    URL (``routers``: model name -> URL) or else every replica (client-side routing).
    ``routing: affinity`` also sends the router the fan-out's key (``X-Session-ID``)."""
    out: dict[str, Any] = {}
    for d in spec.models:
        fam = family_of(d.model)
        router = (routers or {}).get(d.name)
        out[d.name] = {
            "model": f"hosted_vllm/{d.name}",
            "api_base": [router] if router else [p.url for p in plans if p.deployment is d],
            "routing": "affinity",
            "load_metrics": not router,  # the router balances load itself
            "capabilities": {"n": fam.n, "logprobs": fam.logprobs, "structured_output": True,
                             "tools": bool(d.tool_call_parser or fam.tool_call_parser)},
        }  # fmt: skip
    return {"models": out}


def default_logs() -> Path:
    """``$XDG_CACHE_HOME/concilium/cluster/logs``: the replicas' logs of a cluster."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "concilium" / "cluster" / "logs"


class Cluster:
    """Running replicas, kept up by the embedded engine's ``Supervisor``: a replica
    that dies, or hangs (``CONCILIUM_LIVENESS``), is restarted on its port with its
    log kept, at most ``max_restarts`` times within 10 minutes, and a line says so."""

    def __init__(
        self, spec: ClusterSpec, plans: list[ReplicaPlan], log: Callable[[str], None]
    ) -> None:
        self.spec = spec
        self.plans = plans
        self.log = log
        self.logs = Path(spec.logs).expanduser() if spec.logs else default_logs()
        self.processes: list[ManagedProcess] = []  # replaced in place on a restart
        self.routers: dict[str, Router] = {}  # model name -> its vllm-router
        self._supervisor: Supervisor | None = None

    @property
    def restarts(self) -> list[int]:
        """Restarts of each replica so far."""
        return self._supervisor.restarts if self._supervisor else [0] * len(self.plans)

    def _process(self, i: int) -> ManagedProcess:
        plan = self.plans[i]
        return ManagedProcess(plan.label, plan.argv, env=plan.env, health_url=f"http://127.0.0.1:{plan.port}/health",
                              deadline=self.spec.deadline, log_path=log_path(self.logs, plan.port))  # fmt: skip

    async def start(self) -> None:
        procs = [self._process(i) for i in range(len(self.plans))]
        results = await asyncio.gather(*(p.start() for p in procs), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            await asyncio.gather(*(p.stop() for p in procs))
            raise failed[0]
        self.processes = procs
        urls = [plan.url for plan in self.plans]
        self._supervisor = Supervisor(self.processes, self._process, urls, progress=True,
                                      max_restarts=self.spec.max_restarts, notice=self.log)  # fmt: skip
        await self._supervisor.__aenter__()

    async def stop(self) -> None:
        if self._supervisor is not None:  # first, so a stop is not taken for a death
            await self._supervisor.__aexit__(None, None, None)
        await asyncio.gather(*(p.stop() for p in self.processes))


@contextlib.asynccontextmanager
async def launch_cluster(
    spec: ClusterSpec, *, pool_file: str | Path | None = None, log: Callable[[str], None] = print
) -> AsyncIterator[Cluster]:
    """Start every replica of ``spec``; yield the running cluster; stop it on exit."""
    plans = plan_replicas(spec)
    policy = spec.router
    routed = [d for d in spec.models if policy and sum(p.deployment is d for p in plans) > 1]
    if routed:
        router_binary()  # not installed: say so before starting any replica
    for plan in plans:
        log(f"starting {plan.label}: {' '.join(plan.argv)}")
    cluster = Cluster(spec, plans, log)
    await cluster.start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            for d in routed:  # one replica needs no router
                urls = [p.url for p in plans if p.deployment is d]
                cluster.routers[d.name] = await stack.enter_async_context(
                    run_router(urls, name=f"{d.name} router", policy=policy or DEFAULT_POLICY,
                               deadline=spec.deadline, max_restarts=spec.max_restarts,
                               log=log, notice=log)
                )  # fmt: skip
            if pool_file:  # a few hundred bytes, written once at start-up
                routers = {name: r.url for name, r in cluster.routers.items()}
                text = yaml.safe_dump(pool_config(spec, plans, routers), sort_keys=False)
                Path(pool_file).write_text(text)  # noqa: ASYNC240
                log(f"model pool written to {pool_file}")
            yield cluster
    finally:
        await cluster.stop()


def load_cluster_spec(path: str | Path) -> ClusterSpec:
    from pydantic import ValidationError

    from concilium.graphs.workflows import load_yaml, read_workflow_text

    try:  # bounded like a workflow file: a FIFO, /dev/zero or an alias bomb is an error, not a hang
        data = load_yaml(read_workflow_text(path, str(path)), str(path))[0]
        return ClusterSpec.model_validate(data or {})
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except ValidationError as exc:
        raise UserError(f"{path}: not a valid cluster spec: {exc}") from None
