"""A dataset's execution state in one word, as ``status`` shows it (Snowpipe's
``SYSTEM$PIPE_STATUS`` executionState, for this pipe). Pure: the facts in, the word out.

Precedence, first match wins:

- ``paused``: an operator paused it (planned work); nothing applies until resumed, even if
  a file is rejected or a sync still holds the lock (it stops before its next file).
- ``blocked``: nothing applies until an operator acts: a file was rejected (the stream
  stops at it), or the lock is held by a session without a lease (never taken over
  automatically). A silent holder is *not* blocked: the next sync takes it over.
- ``busy``: a sync holds the dataset's lock right now (a silent one is about to be taken
  over by the next sync).
- ``running``: files are pending and nothing is in the way: the next event or sweep
  applies them.
- ``idle``: nothing pending.

Findings that do not stop the stream (a conflict, a held or missing file, a watermark in
the future, the last error of a sync that the next run retries) leave the word as it is;
``needs_attention`` (the exit code) covers those.
"""

from __future__ import annotations

import enum

from tickets_ingest.models import LockHolder


class PipeState(enum.StrEnum):
    PAUSED = "paused"
    BLOCKED = "blocked"
    BUSY = "busy"
    RUNNING = "running"
    IDLE = "idle"


def pipe_state(
    *, paused: bool, rejected: bool, holder: LockHolder | None, pending: int
) -> PipeState:
    """The one word for a dataset (see the module's docstring for the precedence)."""
    if paused:
        return PipeState.PAUSED
    if rejected or (holder is not None and not holder.has_lease):
        return PipeState.BLOCKED
    if holder is not None:
        return PipeState.BUSY
    if pending > 0:
        return PipeState.RUNNING
    return PipeState.IDLE
