"""``Endpoints``: where a workflow's models are served, decided when it is bound.

A workflow is built once, with each model's ``api_base`` as its file or code says. A
backend (the simulated server, the embedded engine, a URL) then *binds* it: the built
graph and agents stay as they are, and the call ledger asks the run's ``Endpoints``
where each call goes. Nothing is rebuilt or read again to change where calls go, the
way an httpx client takes its transport as a value.

Example:
    >>> from concilium.agents import ModelSpec
    >>> here = Endpoints("http://127.0.0.1:9/v1")
    >>> here.resolve(ModelSpec("hosted_vllm/gemma", api_base="http://gpu:8000/v1")).replicas
    ('http://127.0.0.1:9/v1',)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ._model import OPENAI_COMPATIBLE_PREFIXES, ModelSpec


class Endpoints:
    """Every model of a bound workflow served at ``api_base``.

    Args:
        api_base: one URL or several replicas, each ending in ``/v1``.
        served_name: the one model name the server answers to (the embedded engine
            serves one model under one name, whatever the workflow calls its models);
            ``None`` keeps each model's own name.

    A model's other settings (capabilities, timeouts, routing, key) are kept.
    """

    __slots__ = ("_cache", "api_base", "served_name")

    def __init__(self, api_base: str | Sequence[str], served_name: str | None = None) -> None:
        bases = (api_base,) if isinstance(api_base, str) else tuple(api_base)
        if not bases:
            raise ValueError("Endpoints needs at least one api_base URL")
        self.api_base: tuple[str, ...] = bases
        self.served_name = served_name
        self._cache: dict[int, tuple[ModelSpec, ModelSpec]] = {}

    def __repr__(self) -> str:
        named = f", served_name={self.served_name!r}" if self.served_name else ""
        return f"Endpoints({list(self.api_base)!r}{named})"

    def resolve(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` as this backend serves it (the same object for the same spec, so
        every call of one deployment shares one replica pool)."""
        hit = self._cache.get(id(spec))
        if hit is not None and hit[0] is spec:
            return hit[1]
        bound = spec.with_api_base(self.api_base)
        if self.served_name is not None:
            prefix = next(
                (p for p in OPENAI_COMPATIBLE_PREFIXES if bound.model.startswith(p)), "openai/"
            )
            bound = replace(bound, model=prefix + self.served_name)
        self._cache[id(spec)] = (spec, bound)  # the spec is kept, so its id stays its own
        return bound
