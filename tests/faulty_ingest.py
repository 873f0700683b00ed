"""``python -m tests.faulty_ingest run``: the real ``taza-ingest`` CLI with a faulty writer.

The fault goes in through the service's documented seam, its writer factory
(``ingest.service.make_writer``): the real writer is built and wrapped, so everything else —
broker, pipeline, spool, signals, exit codes — is the shipped code. Chosen by ``FAULT_INGEST``:

- ``delivery-raise``: a write from the delivery task raises an exception no writer should
  (``RuntimeError``), as a bug in a writer or a library would;
- ``replay-raise``: writes fail as "database unavailable" for ``FAULT_AFTER_S`` seconds (so
  batches are spooled), then the replay task's write raises ``RuntimeError``;
- ``delivery-hang``: after ``FAULT_AFTER_S`` seconds a write from the delivery task never
  returns (a wedged stage).

Shipped code never imports this module.
"""

from __future__ import annotations

import asyncio
import os
import time

import ingest.service
from ingest.cli import main
from ingest.config import Settings
from ingest.errors import WriteUnavailable
from ingest.writers import Writer, make_writer

MODE = os.environ.get("FAULT_INGEST", "")
AFTER_S = float(os.environ.get("FAULT_AFTER_S", "1"))


class FaultyWriter:
    def __init__(self, real: Writer) -> None:
        self.real = real
        self.description = f"faulty({MODE}) {real.description}"
        self.started = time.monotonic()

    async def start(self) -> None:
        await self.real.start()

    async def write(self, body: bytes) -> None:
        task = asyncio.current_task()
        name = task.get_name() if task is not None else ""
        late = time.monotonic() - self.started > AFTER_S
        if MODE == "delivery-raise" and name == "delivery" and late:
            raise RuntimeError("injected fault: writer bug in the delivery task")
        if MODE == "delivery-hang" and name == "delivery" and late:
            await asyncio.Event().wait()
        if MODE == "replay-raise":
            if name == "replay" and late:
                raise RuntimeError("injected fault: writer bug in the replay task")
            if not late:
                raise WriteUnavailable("injected: database unavailable")
        await self.real.write(body)

    async def ping(self) -> bool:
        return await self.real.ping()

    async def close(self) -> None:
        await self.real.close()


def faulty_writer(settings: Settings) -> Writer:
    return FaultyWriter(make_writer(settings))


if __name__ == "__main__":
    if MODE not in ("delivery-raise", "replay-raise", "delivery-hang"):
        raise SystemExit(f"FAULT_INGEST={MODE!r}: not a known fault")
    ingest.service.make_writer = faulty_writer  # type: ignore[attr-defined]
    main()
