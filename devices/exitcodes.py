"""Exit statuses of taza's commands (``taza-ingest``, ``taza-sim``, the demo), named once.

Scripts and CI key on these numbers, so they are part of the public interface: a value is
never reused for another meaning. 2 is click's own code for a bad command line; an invalid
configuration is the same kind of mistake (nothing was attempted), so it shares it.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique
class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1
    """The job ran and failed: a fatal error, the broker refused the service, a load run
    left messages unacknowledged."""
    USAGE = 2
    """Bad command line or configuration (unknown option, invalid setting, missing data
    directory, unknown reason code): nothing was attempted."""
    VERIFY_MISMATCH = 3
    """``taza-sim verify``: something lost, partial, wrongly accepted or missing from the
    dead-letter store."""
    VERIFY_IMPOSSIBLE = 4
    """``taza-sim verify``: the comparison could not be made (database unreachable or
    answering errors, unreadable ground-truth log)."""
    BROKER_UNREACHABLE = 5
    """``taza-sim run`` / ``load``: no usable connection to the broker at start."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C / SIGINT (128 + 2, the shell's convention) before the end."""
