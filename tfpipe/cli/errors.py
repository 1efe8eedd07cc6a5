"""How the tools report a TfpipeError: one line on stderr and exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import os
import sys

from tfpipe.errors import TfpipeError

EXIT_USAGE = 2


@contextlib.contextmanager
def reported():
    try:
        yield
    except TfpipeError as error:
        print(f"{os.path.basename(sys.argv[0])}: error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)
