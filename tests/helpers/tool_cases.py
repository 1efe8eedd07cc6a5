"""Runs one bin/ tool on several command lines in this one process and prints, as the last
line, a JSON list of each run's exit status and stderr.

Usage: TOOL_PATH JSON_LIST_OF_ARGUMENT_LISTS. For the checks that bad input is one line: in
a process of its own each such check spends 7 s importing TensorFlow to print that line.
Each run goes through the tool's own start (absl's app.run, its flag parsing, the tool's
main), with absl's flags reset to their defaults in between."""

import contextlib
import io
import json
import runpy
import sys
import traceback

from absl import flags

tool, command_lines = sys.argv[1], json.loads(sys.argv[2])
runs = []
for arguments in command_lines:
    flags.FLAGS.unparse_flags()
    sys.argv = [tool, *arguments]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            runpy.run_path(tool, run_name="__main__")
            returncode = 0
        except SystemExit as exit:
            returncode = exit.code if isinstance(exit.code, int) else 1
        except Exception:
            traceback.print_exc()
            returncode = 1
    runs.append({"returncode": returncode, "stderr": stderr.getvalue()})
print(json.dumps(runs))
