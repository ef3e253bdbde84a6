"""How the CLI shows plans, reports and status to a person (and as JSON)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from tickets_ingest.core.keys import file_name
from tickets_ingest.core.pipestate import PipeState
from tickets_ingest.logic.activity import rejection_text
from tickets_ingest.models import (
    BlockedFile,
    Conflict,
    FileResult,
    HeldFile,
    StreamObject,
    SyncReport,
)

if TYPE_CHECKING:  # the Lambda renders reports, never a status: not in its cold start
    from tickets_ingest.logic.status import DatasetStatus, LedgerEntry


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 0:
        return "in the future (clock skew?)"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {seconds % 60}s"


def blocked_line(blocked: BlockedFile) -> str:
    return rejection_text(blocked)  # also the last error noted for it


def conflict_line(conflict: Conflict) -> str:
    """The one line an operator sees for a conflict (stderr of ``sync`` and ``status``)."""
    return (
        f"CONFLICT {conflict.obj.key}: applied with ETag {conflict.applied_etag}, now "
        f"{conflict.obj.etag}; not applied, left in changes/ (quarantine it, see the runbook)"
    )


def held_line(held: HeldFile) -> str:
    return f"HELD {held.obj.key}: {held.reason}"


def attention_lines(status: DatasetStatus) -> list[str]:
    """One line per thing that makes ``status`` exit 1 (printed on stderr)."""
    lines = []
    if status.blocked is not None:
        lines.append(f"BLOCKED {blocked_line(status.blocked)}")
    lines += [conflict_line(c) for c in status.plan.conflicts]
    lines += [held_line(h) for h in status.plan.held]
    if status.missing:
        lines.append(
            f"MISSING {len(status.missing)} archived file(s) of {status.dataset} not in the "
            f"ledger, first {status.missing[0].obj.key}: replay --dataset {status.dataset} "
            "--missing"
        )
    if status.watermark_in_future:
        lines.append(
            f"WATERMARK IN THE FUTURE {status.watermark}: newer files apply as late and the "
            "lag is unknown; see the runbook"
        )
    return lines


def _counts(result: FileResult) -> str:
    c = result.counts
    parts = [f"{c.read} read", f"{c.upserted} upserted"]
    if c.skipped_older:
        parts.append(f"{c.skipped_older} older kept out")
    if c.alarm_filtered:
        parts.append(f"{c.alarm_filtered} alarms dropped")
    if c.sentinel_filtered:
        parts.append(f"{c.sentinel_filtered} sentinel (export truncated!)")
    if c.duplicate_ids:
        parts.append(f"{c.duplicate_ids} repeated ids")
    if c.rejected:
        parts.append(f"{c.rejected} rejected")
    return ", ".join(parts)


def print_report(report: SyncReport, out: TextIO) -> None:
    plan = report.plan
    mode = "dry run: nothing was changed (add --apply to apply)" if report.dry_run else "applied"
    print(f"dataset {report.dataset} — {mode}", file=out)
    print(f"  watermark before: {plan.watermark or '(none: fresh stream)'}", file=out)
    results = {r.key: r for r in report.applied}
    if not plan.to_apply:
        print("  nothing pending", file=out)
    for number, planned in enumerate(plan.to_apply, start=1):
        obj = planned.obj
        result = results.get(obj.key)
        if result is not None:
            outcome = f"{'would apply' if report.dry_run else 'applied'}: {_counts(result)}"
            outcome += f" ({result.duration_ms} ms)"
        elif report.rejected is not None and report.rejected.key == obj.key:
            outcome = "REJECTED: " + blocked_line(report.rejected)
        elif report.stopped_early:
            outcome = "not started (time budget); next run continues"
        else:
            outcome = "waits (an earlier file is rejected)"
        print(
            f"  {number:>3}. {obj.name}  {planned.export_type.value:<8} "
            f"{human_bytes(obj.size):>9}  {outcome}",
            file=out,
        )
    for obj in plan.to_archive:
        done = "archived" if obj.key in report.archived else "to archive"
        print(f"  already applied, {done}: {obj.name}", file=out)
    for conflict in plan.conflicts:
        print(
            f"  CONFLICT: {conflict.obj.name} was applied with ETag {conflict.applied_etag}, "
            f"now has {conflict.obj.etag}: left in changes/ for an operator",
            file=out,
        )
    for held in plan.held:
        print(f"  HELD: {held.obj.name} {held.reason}", file=out)
    for key in plan.ignored:
        print(f"  ignored (not a stream file): {key}", file=out)
    if not report.dry_run:
        print(f"  watermark after:  {report.watermark_after or '(none)'}", file=out)


def report_json(report: SyncReport) -> dict[str, Any]:
    return {
        "dataset": report.dataset,
        "dry_run": report.dry_run,
        "watermark_before": report.plan.watermark,
        "watermark_after": report.watermark_after,
        "planned": [
            {"key": p.obj.key, "export_type": p.export_type.value, "size": p.obj.size}
            for p in report.plan.to_apply
        ],
        "applied": [
            {
                "key": r.key,
                "export_type": r.export_type.value,
                "committed": r.committed,
                "archived": r.archived,
                "duration_ms": r.duration_ms,
                "rows": vars(r.counts),
            }
            for r in report.applied
        ],
        "archived": report.archived,
        "conflicts": [c.obj.key for c in report.plan.conflicts],
        "ignored": list(report.plan.ignored),
        "held": [h.obj.key for h in report.plan.held],
        "rejected": None if report.rejected is None else blocked_line(report.rejected),
        "stopped_early": report.stopped_early,
    }


def _ago(status: DatasetStatus, moment: datetime | None) -> str:
    return f"{human_age(status.age_of(moment))} ago"


def summary_lines(status: DatasetStatus) -> list[str]:
    """The pipe at a glance (docs/status.md): the state word and what it rests on, pending,
    lag and drift on the first line; why it is paused, blocked or busy; the last file
    applied, the last message, the last error."""
    state = status.state
    count = len(status.plan.to_apply)
    pending = f"{count} pending"
    oldest = status.oldest_pending
    if oldest is not None:
        pending += f" (oldest {oldest.obj.name}, {human_age(status.age_of(oldest.obj.timestamp))})"
    if status.watermark_in_future:
        lag = "unknown (watermark in the future)"
    else:
        lag = human_age(status.lag_seconds)
    applied = status.last_applied
    drift = applied.drift if applied is not None else None
    drifting = "none"
    if drift is not None:
        changes = [f"+{c}" for c in drift.added] + [f"-{c}" for c in drift.missing]
        drifting = f"{' '.join(changes) or 'changed'} since {file_name(drift.since_key)}"
    lines = [
        f"{status.dataset:<5} {state.value.upper():<8} {pending}  lag {lag}  drift: {drifting}"
    ]
    indent = " " * 6
    why = _why(status, state)
    if why:
        lines.append(f"{indent}{why}")
    if applied is None:
        lines.append(f"{indent}last applied  none")
    else:
        lines.append(
            f"{indent}last applied  {file_name(applied.key)} ({applied.export_type}) at "
            f"{applied.applied_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC, "
            f"{_ago(status, applied.applied_at)}"
        )
    seen = status.activity
    if seen is None or seen.last_message_at is None:
        lines.append(f"{indent}last message  none recorded")
    else:
        about = seen.last_message_kind or "?"
        if seen.last_message_key:
            about += f" {file_name(seen.last_message_key)}"
        lines.append(f"{indent}last message  {_ago(status, seen.last_message_at)} ({about})")
    if seen is None or seen.last_error_at is None:
        lines.append(f"{indent}last error    none recorded")
    else:
        lines.append(
            f"{indent}last error    {_ago(status, seen.last_error_at)} "
            f"({seen.last_error_kind}): {seen.last_error}"
        )
    return lines


def _why(status: DatasetStatus, state: PipeState) -> str | None:
    lock = status.lock
    if state is PipeState.PAUSED and status.paused is not None:
        return status.paused.describe()
    if state is PipeState.BLOCKED:
        if status.blocked is not None:
            return f"stopped at: {blocked_line(status.blocked)}"
        if lock is not None:
            how = "by another role's session" if lock.hidden else "without a lease"
            return f"the sync lock is held {how}: {lock.describe()}"
    if state is PipeState.BUSY and lock is not None:
        return f"syncing now: {lock.describe()}"
    return None


def print_summary(status: DatasetStatus, out: TextIO) -> None:
    for line in summary_lines(status):
        print(line, file=out)


def print_status(status: DatasetStatus, out: TextIO) -> None:
    plan = status.plan
    print(f"dataset {status.dataset}", file=out)
    if status.paused is not None:
        print(
            f"  PAUSED         {status.paused.describe()} (planned work: nothing applies, "
            f"files wait; tickets-ingest resume --dataset {status.dataset})",
            file=out,
        )
    print(f"  watermark      {status.watermark or '(none: nothing applied yet)'}", file=out)
    if status.watermark_in_future:
        print(
            f"  lag            unknown: WATERMARK IN THE FUTURE, "
            f"{human_age(status.clock_skew_seconds)} ahead of now (a future-dated file was "
            "applied; newer files apply as late): see the runbook",
            file=out,
        )
    else:
        paused = " (paused: not applying)" if status.paused is not None else ""
        print(f"  lag            {human_age(status.lag_seconds)}{paused}", file=out)
        if status.clock_skew_seconds is not None:
            print(
                f"  clock skew     the watermark is {human_age(status.clock_skew_seconds)} "
                "ahead of this clock (within FUTURE_TOLERANCE_SECONDS)",
                file=out,
            )
    pending = [p.obj.name + (" (late)" if p in plan.late else "") for p in plan.to_apply]
    print(
        f"  pending        {len(pending)}" + (f": {', '.join(pending[:8])}" if pending else ""),
        file=out,
    )
    if len(pending) > 8:
        print(f"                 … and {len(pending) - 8} more", file=out)
    if status.blocked:
        b = status.blocked
        print(f"  BLOCKED        {blocked_line(b)}", file=out)
        print(
            f"                 since {b.since:%Y-%m-%d %H:%M:%S %Z}, {b.attempts} attempt(s)",
            file=out,
        )
    elif status.lock is not None and status.lock.silent:
        print(
            f"  BLOCKED        by a silent sync holding the lock: {status.lock.describe()}",
            file=out,
        )
    elif status.lock is not None and not status.lock.has_lease:
        print(
            f"  blocked        unknown: the sync lock is held by {status.lock.describe()}", file=out
        )
    else:
        print("  blocked        no", file=out)
    if status.lock is not None and status.lock.has_lease and not status.lock.silent:
        print(f"  syncing now    {status.lock.describe()}", file=out)
    print(f"  applied files  {status.applied_files} ({status.late_files} late)", file=out)
    print(f"  rejected rows  {status.rejected_rows}", file=out)
    if plan.to_archive:
        print(
            f"  to archive     {len(plan.to_archive)} (applied; the next sync moves them)", file=out
        )
    for conflict in plan.conflicts:
        print(
            f"  CONFLICT       {conflict.obj.name}: applied ETag {conflict.applied_etag}, "
            f"now {conflict.obj.etag}",
            file=out,
        )
    for held in plan.held:
        print(f"  HELD           {held.obj.name}: {held.reason}", file=out)
    if status.missing:
        names = [p.obj.name for p in status.missing]
        print(
            f"  MISSING        {len(names)} archived in processed/ but not in the ledger "
            f"(after a restore? replay --missing): {', '.join(names[:8])}"
            + (f" … and {len(names) - 8} more" if len(names) > 8 else ""),
            file=out,
        )
    if plan.ignored:
        print(f"  ignored keys   {len(plan.ignored)}", file=out)
    if status.recent:
        print("  recent         (newest first; when applied, UTC)", file=out)
        for entry in status.recent:
            print(f"    {_entry_line(entry)}", file=out)


def _entry_line(entry: LedgerEntry) -> str:
    name = entry.key.rsplit("/", 1)[-1]
    when = f"{entry.finished_at:%Y-%m-%d %H:%M:%S}"
    if entry.export_type == "quarantine":
        meta = entry.metadata
        return f"{when}  {name}  quarantine  by {meta.get('who')}: {meta.get('why')}"
    if entry.export_type == "pause":
        meta = entry.metadata
        return f"{when}  (the stream)  pause  by {meta.get('who')}: {meta.get('why')}"
    if entry.export_type == "resume":
        meta = entry.metadata
        return (
            f"{when}  (the stream)  resume  by {meta.get('who')}, paused by "
            f"{meta.get('paused_by')} for {human_age(meta.get('paused_seconds'))}: "
            f"{meta.get('why')}"
        )
    rows = f"{entry.rows_read:>7} read {entry.rows_upserted:>7} upserted"
    if entry.rows_rejected:
        rows += f" {entry.rows_rejected} rejected"
    if entry.rows_skipped_older:
        rows += f" {entry.rows_skipped_older} older kept out"
    return f"{when}  {name}  {entry.export_type:<8} {rows}  {entry.duration_ms:>6} ms"


def print_history(dataset: str, entries: list[LedgerEntry], out: TextIO) -> None:
    print(f"dataset {dataset}: {len(entries)} decision(s), newest first", file=out)
    for entry in entries:
        print(f"  {_entry_line(entry)}", file=out)


class ProgressBar:
    """A one-line progress bar on a terminal, for files big enough to wait for."""

    MIN_SIZE = 1_000_000

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._last = 0.0

    def update(self, obj: StreamObject, done: int) -> None:
        if obj.size < self.MIN_SIZE:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < obj.size:
            return
        self._last = now
        share = min(done / obj.size, 1.0) if obj.size else 1.0
        filled = int(share * 30)
        self._stream.write(
            f"\r  {obj.name} [{'#' * filled}{' ' * (30 - filled)}] {share:4.0%} "
            f"{human_bytes(done)}/{human_bytes(obj.size)}"
        )
        self._stream.flush()

    def clear(self) -> None:
        self._stream.write("\r" + " " * 79 + "\r")
        self._stream.flush()
