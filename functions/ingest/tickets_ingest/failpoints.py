"""Named step boundaries of applying a file, where tests inject crashes.

Production code calls ``reached(step, key)`` at each boundary; it costs a dict lookup.
Tests register a callback (``on``), and ``TICKETS_FAILPOINT=<step>[:<key substring>]`` makes
a process die on the spot (``os._exit``), like a killed Lambda or a kill -9 of the CLI.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Step(enum.Enum):
    LISTED = "listed"  # planned from the listing and the ledger; nothing applied yet
    BODY_OPENED = "body-opened"  # the GET for the file succeeded
    # The body was read through COPY into the staging table. A small file's upsert has run
    # too by then (it goes behind the COPY, in its round trip); nothing is committed yet.
    STAGED = "staged"
    UPSERTED = "upserted"  # rows upserted, in the open transaction
    LEDGER_WRITTEN = "ledger-written"  # ledger row ready to go with the COMMIT, not sent
    COMMITTED = "committed"  # the transaction committed; the file is still in changes/
    COPIED = "copied"  # copied to processed/, not yet deleted from changes/
    BATCHED = "batched"  # copied, in a batch delete about to be sent (DeleteObjects)
    DELETED = "deleted"  # deleted from changes/ (by its batch): the file is done


Callback = Callable[[Step, str], None]
_callbacks: list[Callback] = []
_EXIT_CODE = 137  # what a SIGKILLed process reports


def _from_environment() -> tuple[Step, str] | None:
    spec = os.environ.get("TICKETS_FAILPOINT", "")
    if not spec:
        return None
    name, _, key_part = spec.partition(":")
    return Step(name), key_part


_killed_at = _from_environment()


def reached(step: Step, key: str = "") -> None:
    if _killed_at is not None and _killed_at[0] is step and _killed_at[1] in key:
        os._exit(_EXIT_CODE)
    for callback in _callbacks:
        callback(step, key)


@contextmanager
def on(callback: Callback) -> Iterator[None]:
    """Call ``callback(step, key)`` at every boundary while the block runs."""
    _callbacks.append(callback)
    try:
        yield
    finally:
        _callbacks.remove(callback)
