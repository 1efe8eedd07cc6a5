"""What a run has done so far, kept in --model_dir so an interrupted run resumes.

After every epoch the model weights and the optimizer's state are written to new
files under checkpoint/, and only then does checkpoint/state.json, replaced
atomically, point at them. A run killed at any moment (even with kill -9 in the
middle of a write) therefore finds either the previous epoch's state or the new
one, never a mix.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from tfpipe.errors import TfpipeError
from tfpipe.paths import ensure_writable_dir

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
RUN_OUTPUTS = (
    CHECKPOINT_DIR,
    "history.json",
    "results.json",
    "best.keras",
    "final.keras",
    "export",
    "training_curves.png",
    "tensorboard",
)


def write_json_atomic(path: str, data) -> None:
    temporary = f"{path}.tmp"
    with open(temporary, "w") as out:
        json.dump(data, out, indent=2)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


@dataclasses.dataclass
class RunState:
    fingerprint: dict
    completed_epochs: int = 0
    history: list = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    wall_seconds: dict = dataclasses.field(default_factory=dict)
    weights_file: str | None = None
    optimizer_file: str | None = None
    optimizer_phase: str | None = None  # the phase whose optimizer wrote optimizer_file


class RunDirectory:
    """--model_dir: its outputs and the resumable state of the run writing them."""

    def __init__(self, path: str, fingerprint: dict, overwrite: bool = False):
        self.path = ensure_writable_dir(path, flag="model_dir")
        self.checkpoint_dir = os.path.join(self.path, CHECKPOINT_DIR)
        previous = None if overwrite else self._load()
        if previous is not None and previous.fingerprint != fingerprint:
            changed = sorted(
                key
                for key in set(previous.fingerprint) | set(fingerprint)
                if previous.fingerprint.get(key) != fingerprint.get(key)
            )
            details = ", ".join(
                f"{key}: {previous.fingerprint.get(key)!r} -> {fingerprint.get(key)!r}" for key in changed[:6]
            )
            raise TfpipeError(
                f"--model_dir={self.path} holds a run with a different configuration ({details}); "
                "rerun with its flags to resume it, pick another --model_dir, or pass --overwrite to replace it"
            )
        if overwrite:
            self._clear()
        self.state = previous or RunState(fingerprint=fingerprint)
        os.makedirs(self.checkpoint_dir, exist_ok=True)

    @property
    def resumed(self) -> bool:
        return self.state.completed_epochs > 0

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save_epoch(self, record: dict, model, optimizer, optimizer_phase: str, wall_seconds: dict) -> None:
        """Records a finished epoch; `record["epoch"]` counts from 1."""
        epoch = record["epoch"]
        weights = f"epoch-{epoch:04d}.weights.h5"
        model.save_weights(os.path.join(self.checkpoint_dir, weights))
        optimizer_state = f"epoch-{epoch:04d}.optimizer.npz"
        store = {}
        optimizer.save_own_variables(store)
        np.savez(os.path.join(self.checkpoint_dir, optimizer_state), **store)
        state = self.state
        state.history = [r for r in state.history if r["epoch"] < epoch] + [record]
        state.completed_epochs = epoch
        state.weights_file, state.optimizer_file, state.optimizer_phase = weights, optimizer_state, optimizer_phase
        state.wall_seconds = dict(wall_seconds)
        if record.get("val_loss") is not None and (
            state.best_val_loss is None or record["val_loss"] < state.best_val_loss
        ):
            state.best_epoch, state.best_val_loss = epoch, record["val_loss"]
        write_json_atomic(os.path.join(self.checkpoint_dir, STATE_FILE), dataclasses.asdict(state))
        write_json_atomic(self.file("history.json"), state.history)
        self._remove_stale_files(keep={weights, optimizer_state, STATE_FILE})

    def restore_weights(self, model) -> None:
        if self.state.weights_file:
            model.load_weights(os.path.join(self.checkpoint_dir, self.state.weights_file))

    def restore_optimizer(self, optimizer, variables, phase: str) -> bool:
        """Loads the optimizer state saved by `phase`; False when there is none to load."""
        if not self.state.optimizer_file or self.state.optimizer_phase != phase:
            return False
        optimizer.build(variables)
        with np.load(os.path.join(self.checkpoint_dir, self.state.optimizer_file)) as saved:
            store = {key: saved[key] for key in saved.files}
        if len(store) != len(optimizer.variables):
            raise TfpipeError(
                f"the optimizer state in {self.checkpoint_dir} has {len(store)} variables, this run's optimizer "
                f"{len(optimizer.variables)}; the checkpoint is not from this configuration: pass --overwrite"
            )
        optimizer.load_own_variables(store)
        return True

    def _load(self) -> RunState | None:
        path = os.path.join(self.checkpoint_dir, STATE_FILE)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as state_file:
                return RunState(**json.load(state_file))
        except (ValueError, TypeError) as error:
            raise TfpipeError(f"{path} is unreadable ({error}); pass --overwrite to start this run afresh") from None

    def _clear(self) -> None:
        """Removes what a run writes, and nothing else a user may keep in the folder."""
        for name in RUN_OUTPUTS:
            target = os.path.join(self.path, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.remove(target)

    def _remove_stale_files(self, keep: set) -> None:
        for name in os.listdir(self.checkpoint_dir):
            if name not in keep:
                os.remove(os.path.join(self.checkpoint_dir, name))
