"""Operator-tunable limits of the decoder.

Kept apart from the field rules because they are deployment policy (how big, how old, how
strict), not part of what a payload means.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds applied by :func:`devices.decode` before and around field validation.

    ``max_depth`` counts the top-level object as 1 (a deposit's ``items[i]`` object is at
    depth 3). ``strict`` turns unknown payload fields from "kept out and counted" into
    ``unknown_field`` rejections.
    """

    max_payload_bytes: int = 4096
    max_depth: int = 4
    max_age: timedelta = timedelta(days=7)
    max_future: timedelta = timedelta(minutes=5)
    strict: bool = False
    max_age_ms: int = field(init=False, repr=False, compare=False)
    max_future_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_payload_bytes < 1:
            raise ValueError("max_payload_bytes must be at least 1")
        if self.max_depth < 1:
            raise ValueError("max_depth must be at least 1 (the top-level object)")
        if self.max_age < timedelta(0) or self.max_future < timedelta(0):
            raise ValueError("max_age and max_future must not be negative")
        # Precomputed once: the window check runs for every message.
        object.__setattr__(self, "max_age_ms", self.max_age // _MS)
        object.__setattr__(self, "max_future_ms", self.max_future // _MS)


DEFAULT_LIMITS = Limits()
