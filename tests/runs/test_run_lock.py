"""RunLock: one live run per directory, never outliving its holder."""

import os
import socket

import pytest

from tfpipe.errors import TfpipeError
from tfpipe.runs.lock import RunLock
from tfpipe.runs.state import RunDirectory


def test_a_held_directory_is_refused_with_the_holder_and_free_after_release(tmp_path):
    held = RunLock(str(tmp_path))
    with pytest.raises(TfpipeError, match=f"in use by a live run \\(pid {os.getpid()} on host {socket.gethostname()}"):
        RunLock(str(tmp_path))
    held.release()
    RunLock(str(tmp_path)).release()


def test_a_run_directory_holds_the_lock_until_it_is_closed(tmp_path):
    with RunDirectory(str(tmp_path), {"a": 1}):
        with pytest.raises(TfpipeError, match="in use by a live run"):
            RunDirectory(str(tmp_path), {"a": 1})
    with RunDirectory(str(tmp_path), {"a": 1}) as again:
        assert again.state.completed_epochs == 0


def test_a_refused_configuration_does_not_keep_the_lock(tmp_path):
    RunDirectory(str(tmp_path), {"a": 1}).release()
    (tmp_path / "checkpoint" / "state.json").write_text('{"fingerprint": {"a": 1}, "completed_epochs": 1}')
    with pytest.raises(TfpipeError, match="different configuration"):
        RunDirectory(str(tmp_path), {"a": 2})
    RunLock(str(tmp_path)).release()  # free again
