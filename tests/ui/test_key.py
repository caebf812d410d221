"""Beyond loopback the UI needs its API key; a browser brings it as ``?key=`` and every
URL the page itself uses (links, forms, the event stream) must carry it on."""

from __future__ import annotations

import asyncio
import html
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

KEY = "s3cret/key+with&odd=chars"


@pytest.fixture
async def keyed_url(sim: Any, tmp_path: Path) -> AsyncIterator[str]:
    """The UI on a real uvicorn server, as ``concilium ui --api-key`` serves it."""
    import uvicorn

    from concilium.app import Session
    from concilium.serving import create_app
    from concilium.ui import add_ui

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = add_ui(
        create_app({}, api_key=KEY, bind=("127.0.0.1", port)),
        session=Session(sim.url),
        state=tmp_path / "run.db",
        api_key=KEY,
    )
    ready = asyncio.Event()

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            ready.set()

    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    await asyncio.wait_for(ready.wait(), 30)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


def _own_urls(page: str) -> list[str]:
    """Every same-origin URL the page links or loads (a GET form's action gets the key
    from a hidden field instead: the browser drops the query of such an action)."""
    return [html.unescape(u) for u in re.findall(r'(?:href|src)="(/[^"]*)"', page)]


def _carries_key(url: str) -> bool:
    return parse_qs(urlsplit(url).query).get("key") == [KEY]


async def test_the_key_in_the_address_is_carried_by_every_link_form_and_stream(
    keyed_url: str,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{keyed_url}/") as reply:
            assert reply.status == 401  # no key, no page
        async with session.get(f"{keyed_url}/", params={"key": KEY}) as reply:
            start = await reply.text()
            assert reply.status == 200
            assert reply.headers["referrer-policy"] == "same-origin"
        urls = _own_urls(start)
        assert urls and all(_carries_key(u) for u in urls), urls
        [action] = re.findall(r'<form id="start" method="post" action="([^"]*)"', start)
        assert _carries_key(html.unescape(action))
        async with session.post(
            keyed_url + html.unescape(action),
            data={"workflow": "debate", "question": "What is 12 * 7?"},
            allow_redirects=False,
        ) as reply:
            assert reply.status == 303, await reply.text()
            location = reply.headers["location"]
        assert _carries_key(location)
        async with session.get(keyed_url + location) as reply:
            view = await reply.text()
            assert reply.status == 200
        run_id = urlsplit(location).path.rsplit("/", 1)[1]
        [stream] = re.findall(r'\+ "(/events[^"]*)"\)', view)
        stream = f"/runs/{run_id}" + html.unescape(stream)
        assert _carries_key(stream)
        async with session.get(keyed_url + stream) as reply:
            assert reply.status == 200
            body = await reply.text()
        assert "event: result" in body
        # History links the run with the key; the compare form sends it too
        async with session.get(f"{keyed_url}/history", params={"key": KEY}) as reply:
            history = await reply.text()
        links = [html.unescape(u) for u in re.findall(r'href="(/runs/[^"]*)"', history)]
        assert links and all(_carries_key(u) for u in links)
        for url in _own_urls(history) + links:
            async with session.get(keyed_url + url) as reply:
                assert reply.status == 200, url
        hidden = re.findall(r'<input type="hidden" name="key" value="([^"]*)">', history)
        assert [html.unescape(v) for v in hidden] == [KEY]
        async with session.get(
            f"{keyed_url}/compare", params=[("run", run_id), ("key", KEY)]
        ) as reply:
            assert reply.status == 200 and "What is 12 * 7?" in await reply.text()


async def test_a_bearer_token_opens_the_pages_without_putting_the_key_in_them(
    keyed_url: str,
) -> None:
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        async with session.get(f"{keyed_url}/history") as reply:
            page = await reply.text()
            assert reply.status == 200
    assert "key=" not in page
