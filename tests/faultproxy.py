"""A fault-injecting HTTP proxy for tests: sits between taza-ingest and a real database.

Bound to 127.0.0.1 on a free port, it forwards every request to ``upstream`` unless a
fault is set, in which case matching requests get what the fault says: a chosen status,
body and headers; a hang (no answer, then the connection is dropped); or a TCP reset.
Every request is logged (time, path, what was done), so tests count write requests and
measure the waits between them. Runs its own event loop in a thread: usable from plain
and async tests alike; ``stop()`` (or leaving the ``with``) ends it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from devstack.servers import HOST, free_port

WRITE_PATHS = ("/write", "/api/v2/write")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding"}


@dataclass(frozen=True)
class Fault:
    """What to do with matching requests instead of forwarding them.

    Exactly one of ``status`` / ``hang_s`` / ``reset``. ``times``: how many requests get it
    (None: until cleared). ``paths``: which request paths it applies to.
    """

    status: int | None = None
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    hang_s: float | None = None
    reset: bool = False
    times: int | None = None
    paths: tuple[str, ...] = WRITE_PATHS


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic()
    method: str
    path: str
    action: str  # "forwarded", "status", "hang", "reset", "upstream_error"
    status: int | None


class FaultProxy:
    def __init__(self, upstream: str | None) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.port = free_port()
        self.seen: list[Seen] = []
        self._fault: Fault | None = None
        self._left: int | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault | None) -> None:
        """Apply ``fault`` to the following requests; None forwards everything again."""
        with self._lock:
            self._fault = fault
            self._left = fault.times if fault is not None else None

    def writes(self, action: str | None = None) -> list[Seen]:
        with self._lock:
            return [
                s
                for s in self.seen
                if s.path in WRITE_PATHS and (action is None or s.action == action)
            ]

    # -- inside the proxy's loop -------------------------------------------------------

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _take(self, path: str) -> Fault | None:
        with self._lock:
            fault = self._fault
            if fault is None or path not in fault.paths:
                return None
            if self._left is not None:
                self._left -= 1
                if self._left <= 0:
                    self._fault = None
            return fault

    def _record(self, request: web.Request, action: str, status: int | None) -> None:
        with self._lock:
            self.seen.append(Seen(time.monotonic(), request.method, request.path, action, status))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._take(request.path)
        if fault is not None and fault.reset:
            self._record(request, "reset", None)
            return _reset(request)
        if fault is not None and fault.hang_s is not None:
            self._record(request, "hang", None)
            await asyncio.sleep(fault.hang_s)
            return _reset(request)
        if fault is not None and fault.status is not None:
            self._record(request, "status", fault.status)
            return web.Response(status=fault.status, body=fault.body, headers=dict(fault.headers))
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        if self.upstream is None:
            self._record(request, "upstream_error", 502)
            return web.Response(status=502, text="fault proxy: no upstream")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in {"host", *_HOP}}
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                headers=headers,
                data=body,
                allow_redirects=False,
            ) as resp:
                reply = await resp.read()
                out_headers = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
                status = resp.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            self._record(request, "upstream_error", 502)
            return web.Response(status=502, text=f"fault proxy: upstream {exc!r}")
        self._record(request, "forwarded", status)
        return web.Response(status=status, body=reply, headers=out_headers)


def _reset(request: web.Request) -> web.StreamResponse:
    """Close with RST (SO_LINGER 0), as a crashed gateway or a dropped NAT entry does; the
    response returned is never sent."""
    transport = request.transport
    if transport is None:
        return web.Response(status=500)
    sock = transport.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return web.Response(status=500)
