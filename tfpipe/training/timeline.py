"""Where a run's first seconds go: from the launch (a bin/ tool's script start, else the process's) to
the end of its first epoch.

    launch -> train() called -> base built, weights read -> data opened and counted
           -> classifier built -> the first phase's data ready (a cache filled, or the frozen
              layers' one pass over the images) -> the first epoch's end (tracing and steps)

On small data these fixed costs are most of the time to accuracy (bench_train); the run says
them in one line and results.json keeps them ("first_epoch_seconds").
"""

from __future__ import annotations

import os
import time


_launched_at: float | None = None


def set_launch_time(when: float) -> None:
    """A tool's script says when it started running. Its process may be older than the tool: a shell
    runs the last command of `sh -c "pip install . && bin/train"` (a Docker CMD, a CI step) in its own
    process by exec, and /proc then dates the launch to the shell's start, counting the install as
    imports (56 s of them, seen from a fresh clone)."""
    global _launched_at
    _launched_at = when


def launched() -> float:
    """Unix time this run's program was launched: its tool's script start, else its process's."""
    return _launched_at or process_started() or time.time()


def process_started() -> float | None:
    """Unix time this process started (Linux: /proc/self/stat's start time after boot), or None."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime
        with open("/proc/stat") as boot:
            booted = next(int(line.split()[1]) for line in boot if line.startswith("btime "))
        return booted + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


class Timeline:
    """Named moments of a run, from its process's launch (or from now, where /proc says nothing)."""

    def __init__(self):
        self.marks = [("launch", launched())]
        self.mark("imports and start-up")

    def mark(self, what: str) -> None:
        """`what` ends now: the time since the last mark was spent on it."""
        self.marks.append((what, time.time()))

    def record(self, first_epoch_end: float | None) -> dict | None:
        """{"launched_at": Unix time, "total": seconds from the launch to first_epoch_end, "seconds":
        {segment: seconds}}; None without an epoch."""
        if first_epoch_end is None:
            return None
        marks = [(what, at) for what, at in self.marks if at <= first_epoch_end]
        segments = {what: at - before for (_, before), (what, at) in zip(marks, marks[1:])}
        segments["first epoch: tracing and steps"] = first_epoch_end - marks[-1][1]
        return {
            "launched_at": round(marks[0][1], 2),
            "total": round(first_epoch_end - marks[0][1], 2),
            "seconds": {k: round(v, 2) for k, v in segments.items()},
        }

    @staticmethod
    def line(record: dict) -> str:
        parts = ", ".join(f"{what} {seconds:.1f} s" for what, seconds in record["seconds"].items())
        return f"First epoch ended {record['total']:.1f} s after launch: {parts}"
