"""Resume inside an epoch: a seeded run killed with SIGKILL mid-epoch, after a save inside it,
resumes at the saved step, trains on exactly the examples the epoch had left in the order the
uninterrupted run used, and ends with the uninterrupted run's weights."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers.runs import read_json
from helpers.tools import REPO

from tfpipe.errors import TfpipeError
from tfpipe.training import resume

SCRIPT = os.path.join(REPO, "tests", "helpers", "recorded_train.py")
STEPS = 4  # 32 training images of the tiny dataset in batches of 8


def _command(data_dir, model_dir, record, overrides, mirrored):
    return [sys.executable, SCRIPT, data_dir, str(model_dir), str(record), json.dumps(overrides)] + (
        ["mirrored"] if mirrored else []
    )


def _env():
    return dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1")


def _parts(record) -> list[tuple[int, list[list[int]]]]:
    """(epoch, its steps' example fingerprints) for each epoch or resumed part of one, in order."""
    parts = []
    for line in open(record).read().splitlines():
        if line.startswith("epoch "):
            parts.append((int(line.split()[1]), []))
        else:
            parts[-1][1].append([int(value) for value in line.split()])
    return parts


def _examples(steps) -> list[int]:
    return [value for step in steps for value in step]


def _run_to_its_end(command) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _run_killed_and_resumed(tmp_path, data_dir, mirrored, overrides):
    replicas = 2 if mirrored else 1
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "run"
    reference_record, killed_record, resumed_record = (tmp_path / name for name in ("ref.txt", "killed.txt", "resumed.txt"))
    _run_to_its_end(_command(data_dir, reference_dir, reference_record, overrides, mirrored))

    killed = subprocess.Popen(
        _command(data_dir, run_dir, killed_record, overrides, mirrored),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    state_file = run_dir / "checkpoint" / "state.json"
    saved = None
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and killed.poll() is None:
            try:
                position = read_json(state_file).get("position") if state_file.exists() else None
            except (ValueError, TfpipeError, OSError):
                position = None  # between the write and the rename of a new state
            if position and position["epoch"] == 1 and position["step"] == 2:
                saved = position
                break
            time.sleep(0.02)
        os.kill(killed.pid, signal.SIGKILL)
    finally:
        killed.wait()
    assert saved is not None, "the run never saved inside epoch 2"
    assert read_json(state_file)["position"] == saved  # killed between two saves

    resumed = _run_to_its_end(_command(data_dir, run_dir, resumed_record, overrides, mirrored))
    log = json.loads(resumed.stdout.strip().splitlines()[-1])["log"]
    assert f"Resuming epoch 2 at step 2 of {STEPS}" in log, log

    reference = _parts(reference_record)
    assert [epoch for epoch, _ in reference] == [1, 2, 3]
    killed_parts, resumed_parts = _parts(killed_record), _parts(resumed_record)
    # The killed run's epoch 2 up to its save, then the resumed run's rest of it: the uninterrupted epoch 2.
    (killed_epoch,) = [steps for epoch, steps in killed_parts if epoch == 2]
    assert len(killed_epoch) >= 2 * replicas  # it trained past the save before the kill
    assert [epoch for epoch, _ in resumed_parts] == [2, 3]
    trained = killed_epoch[: 2 * replicas] + resumed_parts[0][1]
    expected = reference[1][1]
    if mirrored:  # the two replicas' halves of a step arrive in either order
        assert sorted(_examples(trained)) == sorted(_examples(expected))
    else:
        assert trained == expected  # the same examples, in the same order
    everything = _examples(trained)
    assert len(everything) == len(set(everything)) == STEPS * 8  # every example of the epoch once
    assert sorted(_examples(resumed_parts[1][1])) == sorted(_examples(reference[2][1]))
    # The epoch's metrics are the whole epoch's, as the uninterrupted run recorded them.
    run_history, reference_history = read_json(run_dir / "history.json"), read_json(reference_dir / "history.json")
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert [r[key] for r in run_history] == pytest.approx([r[key] for r in reference_history], rel=1e-4, abs=1e-6)
    with np.load(reference_dir / "final_weights.npz") as a, np.load(run_dir / "final_weights.npz") as b:
        for name in a.files:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.slow
def test_a_run_killed_inside_an_epoch_resumes_at_its_saved_step_as_if_never_stopped(tmp_path, data_dir):
    _run_killed_and_resumed(tmp_path, data_dir, mirrored=False, overrides={})


@pytest.mark.slow
def test_the_same_with_two_replicas(tmp_path, data_dir):
    _run_killed_and_resumed(tmp_path, data_dir, mirrored=True, overrides={})


@pytest.mark.parametrize(
    "text, every",
    [
        ("10m", resume.Every(seconds=600)),
        ("30s", resume.Every(seconds=30)),
        ("1.5h", resume.Every(seconds=5400)),
        ("500steps", resume.Every(steps=500)),
        ("1step", resume.Every(steps=1)),
        ("epoch", resume.Every()),
        ("0", resume.Every()),
    ],
)
def test_checkpoint_every_reads_durations_steps_and_epoch(text, every):
    assert resume.Every.parse(text) == every


@pytest.mark.parametrize("text", ["", "10", "fast", "-5m", "0s", "2.5steps", "10 minutes"])
def test_a_checkpoint_every_that_is_neither_says_what_to_give(text):
    with pytest.raises(TfpipeError, match="give a duration .* a step count .* or 'epoch'|whole number"):
        resume.Every.parse(text)
