"""What a derived point costs: k of an item's N stored samples, drawn in the method's
own mode.

A sampling method draws its N samples either in one request with ``n=N`` (the prompt
is paid once) or in N requests (paid N times), or in chunks between the two. A point
derived from k of the N stored samples (majority@k, a replayed stopping rule) costs
what *drawing k* would have cost in that mode:

* requests: ``ceil(k / s)``, where ``s = N / R`` samples came back per request;
* tokens: ``ceil(k / s) * P / R + k * C / N``, with ``P`` and ``C`` the prompt and
  completion tokens of the item's ``R`` sampling requests (the mean over every
  k-subset of the samples, the same expectation majority@k takes).

So with one ``n=N`` request, k=1 costs the prompt plus one sample's completion (what a
single sample costs), never the prompt scaled down by k/N. A method that makes calls
besides its samples (a judge, a synthesiser) has no derived costs: what those calls
would cost for k samples is not in the record, and a guess is not a number to print.

Example:
    >>> one = SamplingCost(samples=4, requests=1, prompt_tokens=100, completion_tokens=80)
    >>> one.at(1), one.at(4)
    ((120.0, 1), (180.0, 1))
    >>> apart = SamplingCost(samples=4, requests=4, prompt_tokens=400, completion_tokens=80)
    >>> apart.at(1), apart.at(4)
    ((120.0, 1), (480.0, 4))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SamplingCost", "sampling_cost"]


@dataclass(frozen=True)
class SamplingCost:
    """One item's sampling: N samples from R requests that used P + C tokens."""

    samples: int
    requests: int
    prompt_tokens: int
    completion_tokens: int

    def at(self, k: int) -> tuple[float, int]:
        """(tokens, requests) of drawing ``k`` samples in this item's mode."""
        if not 1 <= k <= self.samples:
            raise ValueError(f"k must be between 1 and {self.samples}, got {k}")
        per_request = self.samples / self.requests
        requests = math.ceil(k / per_request - 1e-9)  # 4 / (4/3) is 3.0000000000000004
        tokens = requests * self.prompt_tokens / self.requests
        return tokens + k * self.completion_tokens / self.samples, requests


def sampling_cost(transcript: Sequence[Mapping[str, Any]], calls: int) -> SamplingCost | None:
    """The sampling cost of one finished item, from its transcript, or ``None`` when
    the item made calls besides its samples (``calls`` counts every request it made).

    The samples are the turns with a ``sample`` index; each request is named by the
    ``request`` of its samples (a transcript written before that field existed: a
    sample turn that carries tokens opens a request, since a request's tokens are
    counted on its first sample only).
    """
    turns = [t for t in transcript if "sample" in t]
    if not turns:
        return None
    if "request" in turns[0]:
        requests = len({t["request"] for t in turns})
    else:
        requests = sum(1 for t in turns if t.get("prompt_tokens") or t.get("completion_tokens"))
    if requests < 1 or requests != calls:
        return None  # calls besides the samples (or a record that does not add up)
    return SamplingCost(
        samples=len(turns),
        requests=requests,
        prompt_tokens=sum(int(t.get("prompt_tokens") or 0) for t in turns),
        completion_tokens=sum(int(t.get("completion_tokens") or 0) for t in turns),
    )
