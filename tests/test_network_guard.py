import socket

import pytest


def test_connecting_beyond_loopback_is_refused() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(ConnectionRefusedError, match="loopback"):
            s.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed
    finally:
        s.close()


async def test_loopback_is_allowed(sim) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(sim.base + "/health") as resp:
            assert resp.status == 200
