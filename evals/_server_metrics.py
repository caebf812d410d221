"""Where an eval's calls went, in the servers' own words: each server's ``/metrics``.

``concilium eval`` reads every distinct OpenAI-compatible server its workflows are
bound to (a ``--backend`` URL, a pool's replicas, the simulated server, the embedded
engine) once before the first item and once after the last, and writes the growth of
vLLM's counters into the summary: requests finished (``vllm:request_success``),
prefix-cache hits and queries in tokens (``vllm:prefix_cache_hits`` /
``vllm:prefix_cache_queries``) and their ratio, per server and in total.

It is the SERVERS' view: a counter grows with every client's traffic in that window,
not only this eval's. A server without ``/metrics`` (a hosted API) or one that does
not answer within ``timeout`` is listed as "no metrics", never an error, never retried.

A URL that is vLLM's router (``vllm-router``: it answers ``/list_workers``) is read
through its replicas, each as its own row marked with the router: the router passes a
``/metrics`` on its own port to ONE replica it picks, so those counters are not the
router's, and its own Prometheus metrics are on a port its URL does not reveal.

Example:
    >>> metrics_url("http://127.0.0.1:8000/v1")
    'http://127.0.0.1:8000/metrics'
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from concilium.graphs.workflows import Workflow

__all__ = ["ServerWatch", "render_servers", "metrics_url"]

TIMEOUT = 2.0  # seconds for one /metrics read: a server that is slower is "no metrics"
VIEW = (
    "the servers' own /metrics counters, read before the first item and after the last: "
    "they include any other client's traffic to these servers in that window"
)
NOT_READ = "no item ran in this invocation: all were finished"
REQUESTS = "vllm:request_success"
HITS = "vllm:prefix_cache_hits"
QUERIES = "vllm:prefix_cache_queries"


def metrics_url(api_base: str) -> str:
    """Where a server at ``api_base`` (ending in ``/v1``) serves its Prometheus text."""
    return api_base.rstrip("/").removesuffix("/v1") + "/metrics"


def workflow_servers(workflows: Sequence[Workflow]) -> list[str]:
    """The distinct OpenAI-compatible servers bound workflows send to, in first-seen order."""
    seen: dict[str, None] = {}
    for wf in workflows:
        if wf.endpoints is not None:  # bound to a backend: every model goes there
            seen.update(dict.fromkeys(wf.endpoints.api_base))
            continue
        specs = [*wf.models.values(), *(a.model for a in wf.agents.values())]
        for spec in specs:
            if spec.openai_compatible:  # a hosted API's /metrics is not vLLM's
                seen.update(dict.fromkeys(spec.replicas))
    return list(seen)


def _counter(metrics: Mapping[str, float], name: str) -> float | None:
    """A counter with or without the ``_total`` suffix Prometheus adds; ``None`` if absent."""
    return metrics.get(f"{name}_total", metrics.get(name))


async def _read(session: Any, url: str) -> dict[str, float] | str:
    """One server's counters, or why there are none (one try, no retry)."""
    import aiohttp

    from concilium.serving.cluster import read_metrics

    try:
        async with session.get(metrics_url(url)) as resp:
            if resp.status != 200:
                return f"HTTP {resp.status}"
            metrics = read_metrics(await resp.text())
    except (aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
        return f"unreachable ({type(exc).__name__})"
    if _counter(metrics, REQUESTS) is None:
        return "no vLLM counters"
    return metrics


async def _behind_router(session: Any, url: str) -> list[str] | None:
    """The replicas behind ``url`` when it is a vllm-router (its ``/list_workers``), else None."""
    import aiohttp

    try:
        async with session.get(url.rstrip("/").removesuffix("/v1") + "/list_workers") as resp:
            if resp.status != 200:
                return None
            listed = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    workers = listed.get("urls") if isinstance(listed, dict) else None
    if not isinstance(workers, list) or not all(isinstance(w, str) for w in workers):
        return None
    return [w.rstrip("/") + "/v1" for w in workers]


async def expand_routers(
    urls: Sequence[str], wait: float = TIMEOUT
) -> list[tuple[str, str | None]]:
    """``(server, router)`` pairs: each URL as itself, or a router's replicas with the
    router's URL beside them (one ``/list_workers`` each, no retry)."""
    import aiohttp

    limit = aiohttp.ClientTimeout(total=wait)
    async with aiohttp.ClientSession(timeout=limit) as session:
        found = await asyncio.gather(*(_behind_router(session, u) for u in urls))
    pairs: dict[str, str | None] = {}
    for url, workers in zip(urls, found, strict=True):
        if workers is None:
            pairs.setdefault(url, None)
        else:
            pairs.update(dict.fromkeys(workers, url))
    return list(pairs.items())


async def read_servers(urls: Sequence[str], wait: float = TIMEOUT) -> list[dict[str, float] | str]:
    """Every server's counters at once (or the reason it has none), in ``urls`` order;
    ``wait`` seconds at most for each."""
    import aiohttp

    limit = aiohttp.ClientTimeout(total=wait)
    async with aiohttp.ClientSession(timeout=limit) as session:
        return list(await asyncio.gather(*(_read(session, u) for u in urls)))


def _figures(requests: float, hits: float, queries: float) -> dict[str, Any]:
    return {
        "requests": int(requests),
        "prefix_cache_hits": int(hits),
        "prefix_cache_queries": int(queries),
        "hit_rate": round(hits / queries, 4) if queries else None,
    }


def server_view(
    urls: Sequence[str],
    before: Sequence[dict[str, float] | str],
    after: Sequence[dict[str, float] | str],
    routers: Sequence[str | None] = (),
) -> dict[str, Any]:
    """The summary's ``servers`` section: each server's growth between two readings
    (``routers``: the router each server was found behind, or ``None``)."""
    rows: list[dict[str, Any]] = []
    total = [0.0, 0.0, 0.0]
    behind = [*routers, *[None] * (len(urls) - len(routers))]
    for url, old, new, router in zip(urls, before, after, behind, strict=True):
        row: dict[str, Any] = {"url": url, "metrics": metrics_url(url)}
        if router is not None:
            row["router"] = router
        if isinstance(old, str) or isinstance(new, str):
            why = [
                f"{when}: {r}"
                for when, r in (("before", old), ("after", new))
                if isinstance(r, str)
            ]
            rows.append({**row, "no_metrics": "; ".join(why)})
            continue
        grown = [
            (_counter(new, n) or 0.0) - (_counter(old, n) or 0.0) for n in (REQUESTS, HITS, QUERIES)
        ]
        if min(grown) < 0:  # a restarted server counts from 0 again: no honest growth
            rows.append(
                {**row, "no_metrics": "counters went down: the server restarted in between"}
            )
            continue
        total = [t + g for t, g in zip(total, grown, strict=True)]
        rows.append({**row, **_figures(*grown)})
    read = sum("no_metrics" not in r for r in rows)
    return {
        "view": VIEW,
        "servers": rows,
        "total": {
            **_figures(*total),
            "servers_read": read,
            "servers_without_metrics": len(rows) - read,
        },
    }


class ServerWatch:
    """Reads the servers before an eval's first item and after its last.

    ``evaluate(..., servers={})`` calls :meth:`start` with the bound workflows once its
    backend is up and :meth:`stop` after the last item, and fills its dict with
    ``section``: ``view``, the summary's ``servers`` section, or why nothing was read.

    Example:
        >>> ServerWatch().view is None
        True
    """

    def __init__(self, timeout: float = TIMEOUT) -> None:
        self.timeout = timeout
        self.urls: list[str] = []
        self.routers: list[str | None] = []
        self.view: dict[str, Any] | None = None
        self._before: list[dict[str, float] | str] = []

    @property
    def section(self) -> dict[str, Any]:
        """What the summary carries: ``view``, or why there is none."""
        return self.view if self.view is not None else {"view": VIEW, "not_read": NOT_READ}

    async def start(self, workflows: Sequence[Workflow] = (), urls: Sequence[str] = ()) -> None:
        """Read the servers of ``workflows`` (and any ``urls``) before the first item."""
        wanted = list(dict.fromkeys([*workflow_servers(workflows), *urls]))
        pairs = await expand_routers(wanted, self.timeout)
        self.urls = [server for server, _ in pairs]
        self.routers = [router for _, router in pairs]
        self._before = await read_servers(self.urls, self.timeout)

    async def stop(self) -> None:
        """Read them again after the last item; fill ``view``."""
        after = await read_servers(self.urls, self.timeout)
        self.view = server_view(self.urls, self._before, after, self.routers)


def render_servers(view: Mapping[str, Any] | None) -> str:
    """The ``servers`` section as the plain summary prints it.

    Example:
        >>> print(render_servers({"view": "v", "servers": [], "total": {}}))
        servers (v):
          no OpenAI-compatible server to read
    """
    if view is None or "not_read" in view:
        return f"servers: not read ({view['not_read'] if view else NOT_READ})"
    lines = [f"servers ({view['view']}):"]
    rows = list(view["servers"])
    if not rows:
        return "\n".join([*lines, "  no OpenAI-compatible server to read"])
    width = max(len(r["url"]) for r in rows)

    def figures(r: Mapping[str, Any]) -> str:
        rate = "-" if r["hit_rate"] is None else f"{r['hit_rate']:.3f}"
        cache = f"{r['prefix_cache_hits']}/{r['prefix_cache_queries']} tokens"
        return f"requests {r['requests']:>6}   prefix cache hits {cache}   hit rate {rate}"

    for r in rows:
        shown = f"no metrics ({r['no_metrics']})" if "no_metrics" in r else figures(r)
        if "router" in r:
            shown += f"   (behind router {r['router']})"
        lines.append(f"  {r['url']:<{width}}   {shown}")
    total = view["total"]
    lines.append(f"  {'total':<{width}}   {figures(total)}   "
                 f"({total['servers_read']} read, {total['servers_without_metrics']} without metrics)")  # fmt: skip
    return "\n".join(lines)
