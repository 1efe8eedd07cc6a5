"""Running the bin/ tools as a user does, and checking their one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

from helpers import tiny_backbone
from helpers.runs import TINY, TINY_PIPELINE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tool_command(tool: str, *args: str, tiny_base: bool = False) -> list[str]:
    """The command line of bin/<tool> with this interpreter; with tiny_base, started through
    helpers.tiny_backbone, so that --backbone can name the tiny test base (train takes
    TINY_BASE_FLAGS, pretrain --backbone alone)."""
    command = [sys.executable, os.path.join(REPO, "bin", tool)]
    if tiny_base:
        command.insert(1, tiny_backbone.__file__)
    return [*command, *args]


def run_tool(
    tool: str,
    *args: str,
    timeout: float = 600,
    env_extra: dict | None = None,
    tiny_base: bool = False,
    shell_first: str | None = None,
):
    """Runs bin/<tool> (see tool_command); returns the CompletedProcess. With shell_first, a shell
    runs that command and then exec's the tool in its own process, as `sh -c "CMD && bin/TOOL"` does."""
    env = dict(os.environ, **(env_extra or {}))
    command = tool_command(tool, *args, tiny_base=tiny_base)
    if shell_first is not None:
        command = ["sh", "-c", f'{shell_first} && exec "$@"', "sh", *command]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_tool_cases(tool: str, command_lines: list[list[str]], timeout: float = 600) -> list:
    """Runs bin/<tool> once per command line, all in one process (helpers/tool_cases.py); returns
    each run's returncode and stderr, in order, for assert_one_line_error."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tool_cases.py")
    process = subprocess.run(
        [sys.executable, script, os.path.join(REPO, "bin", tool), json.dumps(command_lines)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return [types.SimpleNamespace(**run) for run in json.loads(process.stdout.strip().splitlines()[-1])]


def bad_input_runs(tool: str, cases: list[tuple[list[str], str]], *common: str) -> dict:
    """Each (flags, message) case of bin/<tool> run after the `common` flags, all in one process
    (run_tool_cases): {message: its run}, for a module fixture that the case's test reads."""
    runs = run_tool_cases(tool, [[*common, *flags] for flags, _ in cases])
    return {message: run for (_, message), run in zip(cases, runs, strict=True)}


def assert_one_line_error(result, tool, message):
    """Exit status 2 and exactly one `TOOL: error: ...` line holding `message`, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{tool}: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def run_bench(data_dir, json_path, *flags):
    """bin/bench_input on the tiny dataset at 32 px, batches of 8, writing `json_path`."""
    return run_tool(
        "bench_input",
        f"--dataset={TINY}",
        f"--data_dir={data_dir}",
        f"--image_size={TINY_PIPELINE.image_size}",
        f"--batch_size={TINY_PIPELINE.batch_size}",
        f"--json={json_path}",
        *flags,
        timeout=300,
    )
