"""``async with stage:`` for the stages that hold a resource (a listening socket, a broker
connection): entering opens it, leaving closes it, whatever ended the block."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Lifetime:
    async def open(self) -> None:
        """Acquire what the stage needs; by default nothing."""

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
