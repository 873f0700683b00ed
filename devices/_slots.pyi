"""devices/_slots.c: a constructor that stores into a frozen, slotted dataclass's slots."""

from typing import Any

class Maker:
    def __init__(self, cls: type, names: tuple[str, ...], defaults: tuple[object, ...]) -> None: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...
