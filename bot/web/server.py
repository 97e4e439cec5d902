"""Serving the web app with uvicorn: on its own (`atelier serve`) or beside the Discord bot (`run --web`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

log = logging.getLogger("atelier.web")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to its host process (the bot or `serve` decides when to stop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class WebServer:
    """One uvicorn server running as a task of the current event loop."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_level="info", lifespan="on", access_log=False)
        self.server = EmbeddedServer(config)
        self.host = host
        self.sock = bind(host, port)  # OSError now (port taken, bad host) rather than inside uvicorn
        self.port = int(self.sock.getsockname()[1])
        self.task: asyncio.Task | None = None

    @property
    def url(self) -> str:
        """Where it listens."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> WebServer:
        """Start serving in the background; returns once the socket listens."""
        self.task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # re-raise why it stopped
                raise RuntimeError("the web server stopped before it started (is the port taken?)")
            await asyncio.sleep(0.02)
        return self

    async def serve(self) -> None:
        """Serve in the foreground until a signal or stop()."""
        await self.server.serve(sockets=[self.sock])

    def request_stop(self) -> None:
        """Ask the server to finish open requests and stop (safe from a signal handler)."""
        self.server.should_exit = True

    async def stop(self) -> None:
        """Finish open requests and stop."""
        self.request_stop()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
