"""Running the bin/ tools as a user does, and checking their one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

from helpers.runs import TINY, TINY_PIPELINE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_tool(tool: str, *args: str, timeout: float = 600, env_extra: dict | None = None):
    """Runs bin/<tool> with this interpreter; returns the CompletedProcess."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


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
