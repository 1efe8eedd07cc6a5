"""Folders tfpipe writes to: checked up front, so a bad path fails before long work."""

from __future__ import annotations

import os
import tempfile

from tfpipe.errors import TfpipeError


def ensure_writable_dir(path: str, *, flag: str) -> str:
    """Creates `path` if needed and proves we can write there; TfpipeError if not."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".tfpipe-write-check-"):
            pass
    except OSError as error:
        raise TfpipeError(
            f"--{flag}={path} is not a writable folder ({error.strerror or error}); choose a folder you can write to"
        ) from None
    return path
