"""Reading the Prometheus text a vLLM replica (``/metrics``), the simulated server or
``vllm-router`` serves: the prefix-cache hit rate and requests per replica (evals,
``bench cluster``), and whether an engine still makes progress (the supervisor).
"""

from __future__ import annotations

import re

__all__ = ["read_metrics"]

# one sample line: name, optional {labels} (quoted values may hold '}' or spaces), value
_SAMPLE = re.compile(r'^([A-Za-z_:][\w:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)')
_LABEL = re.compile(r'([A-Za-z_]\w*)="((?:[^"\\]|\\.)*)"')


def read_metrics(text: str, by: str | None = None) -> dict[str, float]:
    """Each sample of Prometheus text, summed over its labels (``vllm:prefix_cache_hits_total``
    over engines and models); with ``by``, one entry per value of that label as
    ``name[value]`` (the router's requests per ``worker``). Comments, blank lines and
    unparseable values are skipped; a counter's ``_total`` suffix is kept as served.

    Example:
        >>> read_metrics('vllm:prefix_cache_hits_total{engine="0",model_name="m"} 96.0')
        {'vllm:prefix_cache_hits_total': 96.0}
    """
    totals: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        if by is not None:
            label = dict(_LABEL.findall(labels or "")).get(by)
            if label is None:
                continue
            name = f"{name}[{label}]"
        totals[name] = totals.get(name, 0.0) + number
    return totals
