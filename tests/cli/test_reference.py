"""docs/cli.md is what tfpipe.cli.reference generates from the tools' flags: it cannot drift."""

import os
import subprocess
import sys

import pytest
from helpers.tools import REPO


@pytest.mark.slow
def test_the_committed_command_reference_is_the_generated_one():
    result = subprocess.run(
        [sys.executable, "-m", "tfpipe.cli.reference", "--check", os.path.join(REPO, "docs", "cli.md")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_every_tool_and_its_flags_are_in_it():
    from tfpipe.cli import reference

    text = open(os.path.join(REPO, "docs", "cli.md")).read()
    for tool in reference.TOOLS:
        assert f"\n## {tool}\n" in text and os.path.isfile(os.path.join(REPO, "bin", tool))
    assert set(reference.TOOLS) == {name for name in os.listdir(os.path.join(REPO, "bin"))}
    for flag in ("--memory_budget", "--checkpoint_every", "--max_accuracy_drop", "--plot", "--[no]stages"):
        assert f"`{flag}`" in text, flag
