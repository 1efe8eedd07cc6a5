"""One live run per directory.

Two processes training into one --model_dir would interleave their checkpoints
and history. A run therefore holds an exclusive flock on MODEL_DIR/.tfpipe.lock
for its whole life. The kernel drops a flock when its holder's file is closed,
which includes the holder being killed (kill -9 too), so the lock can never
outlive its run and needs no clean-up. The file records who holds it (pid, host,
since when), so the refusal can name the live run.

flock is advisory and local: every tfpipe process honours it, and it works across
processes of one machine; on network file systems that do not support flock
(some NFS set-ups), the open succeeds without excluding anyone.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

from tfpipe.errors import TfpipeError

LOCK_FILE = ".tfpipe.lock"


class RunLock:
    """An exclusive lock on a run directory, released by release() or by the process's end."""

    def __init__(self, directory: str, *, flag: str = "model_dir"):
        self.path = os.path.join(directory, LOCK_FILE)
        self._file = open(self.path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self._file.close()
            raise TfpipeError(
                f"--{flag}={directory} is in use by a live run ({holder}); wait for it to finish, stop it, "
                f"or choose another --{flag}"
            ) from None
        self._file.seek(0)
        self._file.truncate()
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "since": since}, self._file)
        self._file.flush()

    def _holder(self) -> str:
        self._file.seek(0)
        try:
            holder = json.loads(self._file.read())
            return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
        except (ValueError, KeyError, TypeError):
            return "a process that is still starting"

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing drops the flock
