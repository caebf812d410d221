"""The evidence store: incremental refresh, BM25 and hybrid search, read by ID, tools."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from concilium import UserError
from concilium.tools import ToolError, builtin_tools
from concilium.tools._embeddings import openai_embedder
from concilium.tools._evidence import EvidenceStore, default_index_path
from concilium.tools.evidence import Embedder

_CONCEPTS = {"cat": [1.0, 0.0, 0.0], "feline": [1.0, 0.0, 0.0], "notes": [-2.0, 0.0, 0.0],
             "dog": [0.0, 1.0, 0.0], "car": [0.0, 0.0, 1.0]}  # fmt: skip


def _embedding(text: str) -> list[float]:
    vector = [0.0, 0.0, 0.0]
    for word in text.lower().replace(".", " ").split():
        for axis, value in enumerate(_CONCEPTS.get(word, [0.0, 0.0, 0.0])):
            vector[axis] += value
    return vector


@pytest.fixture
async def embeddings_server() -> AsyncIterator[tuple[str, list[list[str]]]]:
    """A loopback /v1/embeddings server with a deterministic concept embedding;
    yields its base URL and the batches of texts it was asked for."""
    batches: list[list[str]] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        batches.append(list(body["input"]))
        data = [{"index": i, "embedding": _embedding(t)} for i, t in enumerate(body["input"])]
        return web.json_response({"object": "list", "data": data[::-1]})  # order by index

    app = web.Application()
    app.router.add_post("/v1/embeddings", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1", batches
    await runner.cleanup()


def _store(folder: Path, embed: Embedder | None = None) -> EvidenceStore:
    return EvidenceStore(folder, path=folder.parent / "index.sqlite", embed=embed)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("Alpha one.\n\nThe lighthouse was built in 1874.\n\nAlpha three.\n")
    (docs / "b.txt").write_text("The harbour opened in 1901.\n")
    (docs / "c.md").write_text("Canteen menu.\n")
    return docs


def test_refresh_is_incremental(folder: Path) -> None:
    store = _store(folder)
    first = store.refresh()
    assert (first.ingested, first.removed, first.unchanged) == (3, 0, 0)
    again = store.refresh()
    assert (again.ingested, again.removed, again.unchanged) == (0, 0, 3)
    (folder / "b.txt").write_text("The harbour opened in 1905.\n")
    (folder / "c.md").unlink()
    changed = store.refresh()
    assert (changed.ingested, changed.removed, changed.unchanged) == (1, 1, 1)
    texts = {p.id: p.text for p in store.passages()}
    assert texts["b.txt#L1"] == "The harbour opened in 1905."
    assert not any(p.document == "c.md" for p in store.passages())
    store.close()
    reopened = _store(folder)  # persisted: a new store on the same file has nothing to do
    assert reopened.refresh().ingested == 0
    assert len(reopened.passages()) == 4


async def test_search_finds_the_passage_by_id(folder: Path) -> None:
    store = _store(folder)
    store.refresh()
    hits = await store.search("when was the lighthouse built")
    assert hits[0].passage.id == "a.md#L3"
    assert hits[0].passage.location == "L3" and hits[0].passage.document == "a.md"
    assert hits[0].score > 0
    with pytest.raises(ToolError, match="empty"):
        await store.search("   ")


def test_read_returns_neighbours_and_unknown_ids_fail(folder: Path) -> None:
    store = _store(folder)
    store.refresh()
    assert [p.id for p in store.read("a.md#L3")] == ["a.md#L1", "a.md#L3", "a.md#L5"]
    assert [p.id for p in store.read("a.md#L1", neighbours=0)] == ["a.md#L1"]
    assert [p.id for p in store.read("b.txt#L1", neighbours=2)] == ["b.txt#L1"]
    with pytest.raises(ToolError, match=r"no passage has the ID 'a.md#L99'.*search"):
        store.read("a.md#L99")


async def test_tools_cite_ids_and_keep_documents_verbatim(folder: Path) -> None:
    (folder / "t.md").write_text("Template {{ config.items() }} and {% include 'x' %} stay.\n")
    store = _store(folder)
    store.refresh()
    search, read = store.tools()
    assert (search.name, read.name) == ("search", "read")
    found = await search({"query": "template include"})
    assert found.startswith("[t.md#L1] Template {{ config.items() }} and {% include 'x' %} stay.")
    assert await read({"passage_id": "b.txt#L1"}) == "[b.txt#L1] The harbour opened in 1901."


async def test_hybrid_fusion_reranks_and_caches_embeddings(
    tmp_path: Path, embeddings_server: tuple[str, list[list[str]]]
) -> None:
    url, batches = embeddings_server
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("cat cat cat notes notes notes\n")
    (docs / "b.md").write_text("A feline handbook that mentions a cat once among many words.\n")
    for name, text in [("c.md", "dog"), ("d.md", "car"), ("e.md", "dog car")]:
        (docs / name).write_text(text + "\n")
    lexical = _store(docs)
    lexical.refresh()
    assert [h.passage.id for h in await lexical.search("cat", k=2)] == ["a.md#L1", "b.md#L1"]
    lexical.close()
    hybrid = _store(docs, embed=openai_embedder(url, "test-embed"))
    hits = await hybrid.search("cat", k=2)
    assert [h.passage.id for h in hits] == ["b.md#L1", "a.md#L1"]
    assert sorted(batches[0]) == sorted(p.text for p in hybrid.passages()) and batches[1] == ["cat"]
    await hybrid.search("dog")
    assert batches[2:] == [["dog"]]  # passages' embeddings come from the store now


async def test_embedding_server_errors_are_tool_errors(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("lighthouse keeper\n")
    store = EvidenceStore(tmp_path, path=tmp_path / "i.sqlite",
                          embed=openai_embedder("http://127.0.0.1:9/v1", "m"))  # fmt: skip
    store.refresh()
    with pytest.raises(ToolError, match="cannot reach"):
        await store.search("lighthouse")


def test_default_index_path_is_keyed_by_the_resolved_folder(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "alias")
    assert default_index_path(tmp_path / "alias") == default_index_path(tmp_path / "real")
    assert default_index_path(tmp_path / "real").parts[-3:-1] == ("concilium", "evidence")


async def test_a_workflows_documents_give_search_and_read_over_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the index goes under ~/.cache
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the launch code is 0000")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("The lighthouse was built in 1874.\n\nIts tower is white.\n")
    (docs / "secret.txt").symlink_to(outside / "secret.txt")
    (docs / "zero.txt").symlink_to("/dev/zero")
    os.mkfifo(docs / "pipe.txt")
    registry = builtin_tools(docs)
    assert registry.names() == ["calculator", "read", "search"]
    found = await registry.call("search", {"query": "lighthouse launch code"})
    assert found == "[a.md#L1] The lighthouse was built in 1874."
    assert await registry.call("read", {"passage_id": "a.md#L1"}) == (
        "[a.md#L1] The lighthouse was built in 1874.\n[a.md#L3] Its tower is white."
    )
    store = registry.get("search").fn.__self__
    assert isinstance(store, EvidenceStore) and store.path.is_relative_to(tmp_path / "home")
    notes = "\n".join(store.notes)
    assert "secret.txt: skipped, a link to" in notes and "outside the folder" in notes
    assert "zero.txt: skipped" in notes and "pipe.txt: skipped, not a regular file" in notes
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="has no text to search"):
        builtin_tools(empty)
