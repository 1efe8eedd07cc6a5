"""Writing run outputs so that no kill and no full disk leaves a half-written file.

Every file or folder tfpipe writes into --model_dir goes through replacing():
the writer fills a temporary sibling, which then takes the target's name with
os.replace, atomic on POSIX file systems. A run killed mid-write (kill -9, a
power cut) leaves the previous version or the new one, plus at worst a
temporary file that the next write replaces. A write that fails (a full or
read-only disk) removes its temporary file, keeps the previous version, and
stops the run with one line saying what could not be written and where.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil

from tfpipe.errors import TfpipeError


@contextlib.contextmanager
def replacing(path: str, *, what: str | None = None):
    """Yields a temporary path next to `path` (file or folder) that replaces `path` when the block succeeds.

    The temporary name ends like the target (.keras, .weights.h5, .npz): Keras and
    numpy pick the format by it.
    """
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".tmp-{os.getpid()}.{name}")
    _remove(temporary)
    try:
        yield temporary
        _swap(temporary, path)
    except OSError as error:
        _remove(temporary)
        reason = error.strerror or str(error)
        raise TfpipeError(
            f"could not write {what or name} to {path} ({reason}); free space or fix the permissions of "
            f"{folder}, then rerun the same command: the last completed epoch's checkpoint is kept and it resumes"
        ) from None
    except BaseException:
        _remove(temporary)
        raise


def write_json(path: str, data) -> None:
    with replacing(path) as temporary, open(temporary, "w") as out:
        json.dump(data, out, indent=2)
        out.flush()
        os.fsync(out.fileno())


def _swap(temporary: str, path: str) -> None:
    if not os.path.isdir(temporary):
        os.replace(temporary, path)
        return
    # os.replace cannot put a folder over a non-empty one: move the old one aside first.
    old = f"{temporary}.old"
    if os.path.lexists(path):
        os.replace(path, old)
    os.replace(temporary, path)
    _remove(old)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)
