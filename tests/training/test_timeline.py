"""A run's timeline: from its tool's launch once, from the train() call after that."""

import time

from tfpipe.training import timeline


def test_a_tool_s_launch_times_its_first_run_only():
    launched = time.time() - 5
    timeline.set_launch_time(launched)
    first = timeline.Timeline()
    first.mark("base built, weights read")
    record = first.record(time.time())
    assert record["from"] == "launch" and record["started_at"] == round(launched, 2) and record["total"] >= 5
    assert list(record["seconds"])[:2] == ["imports and start-up", "base built, weights read"]
    # A later train() call in the same process (a notebook that ran a tool first) starts anew.
    called = time.time()
    later = timeline.Timeline().record(time.time())
    assert later["from"] == "train() called" and later["started_at"] >= round(called, 2) - 0.01
    assert later["total"] < 1 and timeline.Timeline.line(later).startswith("First epoch ended")
