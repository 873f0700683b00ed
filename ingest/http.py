"""The HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``, the API (``/api/v1``) and the page.

FastAPI served by uvicorn *inside the service's own event loop* (the routes read the fleet
state directly, no copy, no lock). Two things uvicorn does by default must not happen here:

- it installs its own SIGINT/SIGTERM handlers and re-raises the signal after ``serve()``
  returns, which would kill the service before its drain (flush, PUBACK, exit 0):
  :class:`EmbeddedServer` captures no signals, the service keeps its own;
- on a port it cannot bind it calls ``sys.exit(3)`` inside its task: we bind the socket
  ourselves first, so a taken port is an ``OSError`` at start (``TAZA_HTTP_ADDR …``, exit 2),
  and any later ``SystemExit`` from it is turned into :class:`HttpFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from ingest.api import ApiContext, build_app
from ingest.errors import IngestError
from ingest.lifetime import Lifetime

STOP_GRACE_S = 3.0


class HttpFailed(IngestError):
    """The HTTP server stopped on its own while the service was running."""


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the service."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass


class HttpServer(Lifetime):
    """Serves while inside ``async with``; :meth:`wait` ends only if the server fails."""

    def __init__(self, host: str, port: int, ctx: ApiContext) -> None:
        self.host = host
        self.port = port
        self.ctx = ctx
        self.app = build_app(ctx)
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=int(STOP_GRACE_S),
        )
        self._server = EmbeddedServer(config)
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    async def open(self) -> None:
        sock = self._bind()
        if self.port == 0:
            self.port = sock.getsockname()[1]
        if self.ctx.influx is not None:
            await self.ctx.influx.open()
        self._task = asyncio.create_task(self._serve(sock), name="http")
        while not self._server.started and not self._task.done():  # noqa: ASYNC110 - no event to wait on
            await asyncio.sleep(0.01)
        if self._task.done():
            await self._task  # raises why it did not start

    async def _serve(self, sock: socket.socket) -> None:
        try:
            await self._server.serve(sockets=[sock])
        except SystemExit as exc:
            why = f"the HTTP server on {self.host}:{self.port} exited ({exc.code})"
            raise HttpFailed(why) from None
        finally:
            sock.close()
        if not self._closing:
            raise HttpFailed(f"the HTTP server on {self.host}:{self.port} stopped")

    async def wait(self) -> None:
        """For the service's task set: returns or raises only when the server died."""
        assert self._task is not None
        await asyncio.shield(self._task)

    async def close(self) -> None:
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            self._server.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(task), STOP_GRACE_S + 2)
            except TimeoutError:
                self._server.force_exit = True
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, IngestError):
                await task
        if self.ctx.influx is not None:
            await self.ctx.influx.close()
        if self.ctx.plan_pool is not None:
            await self.ctx.plan_pool.aclose()
