"""Where a run's first seconds go: from the launch (a bin/ tool's script start; from Python, the
train() call) to the end of its first epoch.

    launch -> train() called -> base built, weights read -> data opened and counted
           -> classifier built -> the first phase's data ready (a cache filled, or the frozen
              layers' one pass over the images) -> the first epoch's end (tracing and steps)

On small data these fixed costs are most of the time to accuracy (bench_train); the run says
them in one line and results.json keeps them ("first_epoch_seconds").
"""

from __future__ import annotations

import time

_launched_at: float | None = None


def set_launch_time(when: float) -> None:
    """A bin/ tool's script says when it started, before its imports. Not the process's start time:
    a shell runs the last command of `sh -c "pip install . && bin/train"` (a Docker CMD, a CI step)
    in its own process by exec, and that reading counted the install as imports (56 s of them, seen
    from a fresh clone)."""
    global _launched_at
    _launched_at = when


class Timeline:
    """Named moments of a run. Launched by a bin/ tool, from the tool's start, imports and start-up
    its first segment; called from Python (a notebook, a test), from the train() call, since the
    process may have lived for hours before it."""

    def __init__(self):
        global _launched_at
        now = time.time()
        if _launched_at is not None and _launched_at <= now:
            self.marks = [("launch", _launched_at), ("imports and start-up", now)]
        else:
            self.marks = [("train() called", now)]
        _launched_at = None  # the tool's launch times its first run only: a later train() call starts anew

    def mark(self, what: str) -> None:
        """`what` ends now: the time since the last mark was spent on it."""
        self.marks.append((what, time.time()))

    def record(self, first_epoch_end: float | None) -> dict | None:
        """{"from": "launch" or "train() called", "started_at": its Unix time, "total": seconds from it
        to first_epoch_end, "seconds": {segment: seconds}}; None without an epoch."""
        if first_epoch_end is None:
            return None
        marks = [(what, at) for what, at in self.marks if at <= first_epoch_end]
        segments = {what: at - before for (_, before), (what, at) in zip(marks, marks[1:])}
        segments["first epoch: tracing and steps"] = first_epoch_end - marks[-1][1]
        return {
            "from": marks[0][0],
            "started_at": round(marks[0][1], 2),
            "total": round(first_epoch_end - marks[0][1], 2),
            "seconds": {k: round(v, 2) for k, v in segments.items()},
        }

    @staticmethod
    def line(record: dict) -> str:
        parts = ", ".join(f"{what} {seconds:.1f} s" for what, seconds in record["seconds"].items())
        return f"First epoch ended {record['total']:.1f} s after {record['from']}: {parts}"
