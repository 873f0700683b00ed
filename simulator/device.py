"""One simulated device = one MQTT connection, behaving like field hardware.

- its own client id (``{prefix}-{device_id}``), a Last Will ``offline`` (QoS 1, retained) and a
  retained ``online`` on every (re)connect;
- QoS 1; a message counts as published when the broker's PUBACK arrives, and only then does it
  leave the device's queue (so a message whose PUBACK was lost is sent again: at least once);
- reconnects with exponential backoff and full jitter after the connection breaks (broker
  restart, network), keeping what it could not send (store-and-forward, bounded), or dropping
  new readings while disconnected when store-and-forward is off;
- a deliberate outage (``DROP``) closes the socket without DISCONNECT so the broker publishes
  the Last Will, as when a device loses power or coverage;
- a clean end publishes a retained ``offline`` and disconnects.

aiomqtt 2.5 is used for the connections. Two of its internals are touched, each for a reason:
the future that completes when the connection is lost (``_disconnected``: so a pending publish
fails at once instead of after its timeout) and the paho client's socket (to drop a connection
without DISCONNECT, which aiomqtt has no API for).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from devices import BrokerURL, DeviceInfo
from simulator.stream import DROP, PUBLISH, REJOIN, Outgoing, topic_for


def tls_context(broker: BrokerURL) -> ssl.SSLContext | None:
    """mqtts:// verifies the broker against the system's CA bundle, as field devices do."""
    return ssl.create_default_context() if broker.tls else None


async def preflight(broker: BrokerURL, client_id: str, wait_s: float = 10.0) -> None:
    """Connect once and disconnect: fail fast, with the reason, when the broker is unusable."""
    client = aiomqtt.Client(
        broker.host,
        broker.port,
        username=broker.username,
        password=broker.password,
        identifier=client_id,
        timeout=wait_s,
        tls_context=tls_context(broker),
    )
    try:
        async with asyncio.timeout(wait_s):
            async with client:
                pass
    except TimeoutError:
        raise ConnectionError(f"no answer from {broker} within {wait_s:g} s") from None
    except aiomqtt.MqttError as exc:
        raise ConnectionError(f"{broker}: {exc}") from None


@dataclass(slots=True)
class FleetCounters:
    """Shared by all devices of a run (single event loop: no locks needed)."""

    online: int = 0
    published: int = 0
    connects: int = 0
    reconnects: int = 0
    connect_failures: int = 0
    publish_failures: int = 0
    dropped_disconnected: int = 0  # readings made while disconnected, store-and-forward off
    dropped_backlog_full: int = 0
    deliberate_drops: int = 0
    fleet_size: int = 0
    devices_up: int = 0  # devices that have connected at least once
    all_up_at: float | None = None  # wall time when the last device first connected


# (message, wall time of the PUBACK or of the last attempt, acked)
Sink = Callable[[Outgoing, float, bool], None]


class _Lost(Exception):
    """The connection is gone; reconnect."""


@dataclass(slots=True)
class DeviceOptions:
    client_prefix: str = "taza-sim"
    keepalive: int = 30
    publish_timeout: float = 10.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backlog_max: int = 10_000
    store_forward: bool = True
    connect_gate: asyncio.Semaphore | None = None
    rng: random.Random = field(default_factory=random.Random)


class Device:
    """Publishes what the run hands it, in order, over its own connection."""

    def __init__(
        self,
        spec: DeviceInfo,
        broker: BrokerURL,
        sink: Sink,
        counters: FleetCounters,
        options: DeviceOptions,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.sink = sink
        self.counters = counters
        self.opt = options
        self.queue: collections.deque[Outgoing] = collections.deque()
        self.wake = asyncio.Event()
        self.finishing = False
        self.deadline = float("inf")  # time.monotonic() after which a finishing device gives up
        self.connected = False
        self.offline_on_purpose = False
        # The data message sent whose PUBACK has not come (yet): if the run ends before a retry
        # is acknowledged, the broker may or may not have it (logged with "acked": false).
        self.attempted: Outgoing | None = None
        self.sessions = 0
        self.state_topic = topic_for(spec, "state")

    # ----- fed by the run -----------------------------------------------------------------

    def enqueue(self, out: Outgoing) -> None:
        if out.action == PUBLISH and not self.connected and not self.offline_on_purpose:
            if not self.opt.store_forward and self.sessions:
                self.counters.dropped_disconnected += 1
                return
            if len(self.queue) >= self.opt.backlog_max:
                self.queue.popleft()
                self.counters.dropped_backlog_full += 1
        self.queue.append(out)
        self.wake.set()

    def finish(self, deadline: float) -> None:
        """Send what is queued until ``deadline`` (monotonic), then say offline and disconnect."""
        self.finishing = True
        self.deadline = deadline
        self.wake.set()

    # ----- the connection loop ------------------------------------------------------------

    def _state(self, payload: bytes) -> Outgoing:
        return Outgoing(
            time.time(),
            self.spec.device_id,
            PUBLISH,
            self.state_topic,
            payload,
            True,
            "state",
            expect="accept",
        )

    async def run(self) -> None:
        """Connect, publish, reconnect; return at the end of the run."""
        backoff = self.opt.backoff_initial
        while True:
            if self.offline_on_purpose and not await self._wait_rejoin():
                return
            if self.finishing and (time.monotonic() >= self.deadline or not self.queue):
                return  # the broker already holds our Will (or we never came up)
            try:
                await self._session()
                return  # clean end
            except _Lost:
                if self.offline_on_purpose:
                    backoff = self.opt.backoff_initial
                    continue
            except (aiomqtt.MqttError, OSError):
                self.counters.connect_failures += 1
            if self.finishing and time.monotonic() >= self.deadline:
                return
            delay = backoff * (0.5 + 0.5 * self.opt.rng.random())
            backoff = min(self.opt.backoff_max, backoff * 2)
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._until_finish_deadline(), timeout=delay)

    async def _until_finish_deadline(self) -> None:
        while not (self.finishing and time.monotonic() >= self.deadline):
            self.wake.clear()
            await self.wake.wait()

    async def _wait_rejoin(self) -> bool:
        """Offline on purpose: wait for REJOIN (True) or the end of the run (False)."""
        while True:
            if self.queue and self.queue[0].action != DROP:
                if self.queue[0].action == REJOIN:
                    self.queue.popleft()
                self.offline_on_purpose = False
                return True
            if self.finishing:
                return False
            self.wake.clear()
            await self.wake.wait()

    def _client(self) -> aiomqtt.Client:
        return aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=f"{self.opt.client_prefix}-{self.spec.device_id}",
            will=aiomqtt.Will(self.state_topic, b"offline", qos=1, retain=True),
            keepalive=self.opt.keepalive,
            timeout=self.opt.publish_timeout,
            clean_session=True,
            tls_context=tls_context(self.broker),
        )

    async def _session(self) -> None:
        client = self._client()
        gate = self.opt.connect_gate
        if gate is not None:
            async with gate:
                await client.__aenter__()
        else:
            await client.__aenter__()
        clean = False
        try:
            self.connected = True
            self.counters.online += 1
            self.counters.connects += 1
            if self.sessions:
                self.counters.reconnects += 1
            else:
                self.counters.devices_up += 1
                if self.counters.devices_up == self.counters.fleet_size:
                    self.counters.all_up_at = time.time()
            self.sessions += 1
            lost: asyncio.Future[None] = client._disconnected
            await self._publish(client, lost, self._state(b"online"))
            while True:
                if self.finishing and (not self.queue or time.monotonic() >= self.deadline):
                    await self._publish(client, lost, self._state(b"offline"))
                    clean = True
                    return
                if not self.queue:
                    self.wake.clear()
                    waiter = asyncio.ensure_future(self.wake.wait())
                    either: set[asyncio.Future[Any]] = {waiter, lost}
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    if lost.done():
                        raise _Lost
                    continue
                head = self.queue[0]
                if head.action == DROP:
                    self.queue.popleft()
                    self.counters.deliberate_drops += 1
                    self.offline_on_purpose = True
                    await self._drop(client, lost)
                    raise _Lost
                if head.action == REJOIN:
                    self.queue.popleft()
                    continue
                await self._publish(client, lost, head)
                self.queue.popleft()
        finally:
            self.connected = False
            self.counters.online -= 1
            if clean:
                with contextlib.suppress(aiomqtt.MqttError, OSError):
                    await client.__aexit__(None, None, None)
            else:
                self._forget(client)

    async def _publish(
        self, client: aiomqtt.Client, lost: asyncio.Future[None], out: Outgoing
    ) -> None:
        if out.channel != "state":
            self.attempted = out
        pub = asyncio.ensure_future(
            client.publish(out.topic, out.payload, qos=1, retain=out.retain)
        )
        await asyncio.wait({pub, lost}, return_when=asyncio.FIRST_COMPLETED)
        if not pub.done():
            pub.cancel()
            self.counters.publish_failures += 1
            raise _Lost
        try:
            pub.result()
        except aiomqtt.MqttError as exc:
            self.counters.publish_failures += 1
            raise _Lost from exc
        if self.attempted is out:
            self.attempted = None
        self.counters.published += 1
        self.sink(out, time.time(), True)

    async def _drop(self, client: aiomqtt.Client, lost: asyncio.Future[None]) -> None:
        """Lose the connection the way a device does: no DISCONNECT, so the Will fires."""
        sock = client._client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        await asyncio.wait({lost}, timeout=2.0)

    def _forget(self, client: aiomqtt.Client) -> None:
        """Abandon a broken client without waiting on it (its socket is closed by paho)."""
        lost = client._disconnected
        if lost.done() and not lost.cancelled():
            lost.exception()  # retrieved: no "exception was never retrieved" noise
        with contextlib.suppress(Exception):
            client._client._sock_close()
        if client._lock.locked():
            client._lock.release()
