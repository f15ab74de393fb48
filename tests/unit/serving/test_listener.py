"""The listening socket of a multi-worker server: connections accepted on it get TCP_NODELAY
from asyncio, as uvicorn's single-process listener does (with uvicorn's own multi-worker
listener they did not, and every keep-alive response waited ~40 ms for a delayed ACK)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from vae_cats.serving.__main__ import tcp_listener


async def nodelay_of_accepted(listener: socket.socket) -> int:
    """TCP_NODELAY of the server side of one connection that asyncio accepts on ``listener``."""
    accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    class Report(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await asyncio.get_running_loop().create_server(Report, sock=listener)
    host, port = listener.getsockname()[:2]
    _, writer = await asyncio.open_connection(host, port)
    try:
        return await asyncio.wait_for(accepted, timeout=10)
    finally:
        writer.close()
        server.close()


def test_connections_on_the_worker_listener_get_tcp_nodelay() -> None:
    listener = tcp_listener("127.0.0.1", 0)
    assert listener.proto == socket.IPPROTO_TCP and listener.family == socket.AF_INET
    assert asyncio.run(nodelay_of_accepted(listener)) != 0


def test_a_busy_port_is_one_line_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"^cannot listen on 127.0.0.1:{port}: Address already"):
            tcp_listener("127.0.0.1", port)
