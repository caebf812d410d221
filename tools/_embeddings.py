"""A client for an OpenAI-compatible ``/v1/embeddings`` endpoint (vLLM serves one for
an embedding model), as an :data:`Embedder` for the evidence store's hybrid search.

Example:
    >>> embed = openai_embedder("http://127.0.0.1:8000/v1", "bge-small")
    >>> callable(embed)
    True
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from concilium._json import load_json

from ._registry import ToolError

MAX_BATCH = 64
MAX_REPLY_BYTES = 64 * 1024 * 1024


def openai_embedder(
    base_url: str, model: str, *, api_key: str | None = None, timeout: float = 60.0
) -> Callable[[list[str]], Awaitable[list[list[float]]]]:
    """An async function embedding texts through ``{base_url}/embeddings``.

    Args:
        base_url: the server's OpenAI base URL, ending in ``/v1``.
        model: the embedding model's name on that server.
        api_key: sent as a bearer token when given.
        timeout: seconds per request.

    Returns:
        ``embed(texts) -> vectors``, one vector per text in order, batched by 64.
    """
    url = base_url.rstrip("/") + "/embeddings"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}

    async def embed(texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        limit = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(timeout=limit, headers=headers) as session:
            for start in range(0, len(texts), MAX_BATCH):
                batch = texts[start : start + MAX_BATCH]
                vectors += await _post(session, url, model, batch)
        return vectors

    return embed


async def _post(
    session: aiohttp.ClientSession, url: str, model: str, batch: list[str]
) -> list[list[float]]:
    try:
        async with session.post(url, json={"model": model, "input": batch}) as reply:
            body = await reply.content.read(MAX_REPLY_BYTES + 1)
            if reply.status != 200:
                raise ToolError(
                    f"embeddings: {url} answered {reply.status}: {body[:200]!r}; "
                    f"check that the server serves the embedding model {model!r}"
                )
    except aiohttp.ClientError as exc:
        raise ToolError(f"embeddings: cannot reach {url} ({exc}); is the server running?") from exc
    if len(body) > MAX_REPLY_BYTES:
        raise ToolError(f"embeddings: the reply from {url} is over {MAX_REPLY_BYTES:,} bytes")
    return _vectors(body, url, len(batch))


def _vectors(body: bytes, url: str, count: int) -> list[list[float]]:
    try:
        data = load_json(body)["data"]
        ordered = sorted(data, key=lambda item: int(item["index"]))
        vectors = [[float(x) for x in item["embedding"]] for item in ordered]
    except (ValueError, KeyError, TypeError) as exc:
        raise ToolError(f"embeddings: malformed reply from {url} ({exc})") from exc
    if len(vectors) != count:
        raise ToolError(f"embeddings: {url} returned {len(vectors)} vectors for {count} texts")
    return vectors
