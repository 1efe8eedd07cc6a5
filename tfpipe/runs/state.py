"""What a run has done so far, kept in --model_dir so an interrupted run resumes.

A checkpoint holds only what training can change. Frozen layers and BatchNorm
statistics never change, and the variables trainable in feature extraction
(the head) are a subset of those trainable in fine-tuning, so the model's state
after any epoch is: the weights it started from (checkpoint/initial.npz, written
once) plus the values of its trainable variables then. Each epoch writes those
values, the best epoch's values and the optimizer's state to a new
checkpoint/epoch-NNNN.npz; only then does checkpoint/state.json, replaced
atomically, point at it. A run killed at any moment (even with kill -9 in the
middle of a write) therefore finds either the previous epoch's state or the new
one, never a mix; and in feature extraction a checkpoint is a few kilobytes, not
the whole model. Training a base from scratch (tfpipe.training.pretrain) is the exception:
its BatchNorm statistics change too, so there every weight is checkpointed
(all_weights=True).

Inside an epoch (--checkpoint_every), checkpoint/step-EEEE-SSSSSS.npz holds the same and
the step's position: the epoch in progress and the steps of it done, the epoch's metric
totals so far, and the random generators' states (dropout, augmentation), so a run killed
inside an epoch resumes it at that step as if never stopped (training.resume). The order of
an epoch is a function of the run's data seed (drawn once when none is given, kept here)
and the epoch, so the position is these few numbers, never a buffer of images.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import numpy as np

from tfpipe import atomic
from tfpipe.errors import TfpipeError
from tfpipe.paths import ensure_writable_dir
from tfpipe.runs.files import CHECKPOINT_DIR, HISTORY, RUN_OUTPUTS, STATE_FILE
from tfpipe.runs.lock import RunLock

INITIAL_WEIGHTS = "initial.npz"


def _save_npz_atomic(path: str, arrays: dict) -> None:
    with atomic.replacing(path, what="a checkpoint") as temporary:
        np.savez(temporary, **arrays)


@dataclasses.dataclass
class RunState:
    fingerprint: dict
    completed_epochs: int = 0
    history: list = dataclasses.field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float | None = None
    wall_seconds: dict = dataclasses.field(default_factory=dict)
    checkpoint_file: str | None = None
    optimizer_phase: str | None = None  # the phase whose optimizer the checkpoint holds
    stopped_early: dict = dataclasses.field(default_factory=dict)  # phase -> the epoch it stopped at (--early_stopping)
    data_seed: int | None = None  # the seed of every epoch's order (data.order)
    # Inside an epoch: {"epoch": 0-based epoch in progress, "step": steps of it done, "phase": name}
    position: dict | None = None


class BestWeights:
    """The best epoch's values of the variables training changes, and the model they make.

    A checkpoint holds only those values, so the best model is the run's initial
    weights with these values on top. Keeping them apart from the current values
    lets a run save or evaluate its best epoch without losing where training is.
    """

    def __init__(self, initial_file: str, all_weights: bool):
        self._initial_file = initial_file
        self._all_weights = all_weights
        self.values: dict[int, np.ndarray] = {}

    def load_into(self, model) -> dict | None:
        """Sets `model` to the best epoch's weights; returns the values it replaced, None if no best yet."""
        if not self.values:
            return None
        current = _changeable_values(model, self._all_weights)
        with np.load(self._initial_file) as initial:
            for i, variable in enumerate(model.weights):
                if i in current or i in self.values:
                    variable.assign(initial[f"w{i}"])
        _assign_values(model, self.values)
        return current

    def save_model(self, model, path: str) -> bool:
        """Writes the best epoch's model to `path` (a .keras file), leaving `model` as it was."""
        current = self.load_into(model)
        if current is None:
            return False
        try:
            with atomic.replacing(path) as temporary:
                model.save(temporary)
        finally:
            _assign_values(model, current)
        return True


class RunDirectory:
    """--model_dir: its outputs and the resumable state of the run writing them; `best` is its best epoch."""

    def __init__(self, path: str, fingerprint: dict, overwrite: bool = False, all_weights: bool = False):
        """Takes the directory's lock first (RunLock): a live run elsewhere is refused before anything is read."""
        self.path = ensure_writable_dir(path, flag="model_dir")
        self._lock = RunLock(self.path)
        try:
            self._open(fingerprint, overwrite)
        except BaseException:
            self._lock.release()
            raise
        self._all_weights = all_weights
        self.best = BestWeights(os.path.join(self.checkpoint_dir, INITIAL_WEIGHTS), all_weights)

    def __enter__(self) -> RunDirectory:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Lets another run use the directory (the end of the process does it too)."""
        self._lock.release()

    def _open(self, fingerprint: dict, overwrite: bool) -> None:
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
        return self.state.completed_epochs > 0 or self.state.position is not None

    def data_seed(self, candidate: int) -> int:
        """The seed of the run's epoch orders: the one its state keeps, or `candidate` (--seed, or one
        the caller drew), then kept in the state for every later resume."""
        if self.state.data_seed is None:
            self.state.data_seed = int(candidate)
            self._write_state()
        return self.state.data_seed

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def start(self, model) -> None:
        """Records the weights a fresh run starts from, or brings back a resumed run's model."""
        initial = os.path.join(self.checkpoint_dir, INITIAL_WEIGHTS)
        if not self.resumed:
            _save_npz_atomic(initial, {f"w{i}": v.numpy() for i, v in enumerate(model.weights)})
            return
        with np.load(initial) as saved:
            if len(saved.files) != len(model.weights):
                raise TfpipeError(
                    f"{initial} does not match this model ({len(saved.files)} weights, not {len(model.weights)}); "
                    "pass --overwrite to start this run afresh"
                )
            for i, variable in enumerate(model.weights):
                variable.assign(saved[f"w{i}"])
        with np.load(os.path.join(self.checkpoint_dir, self.state.checkpoint_file)) as saved:
            _assign(model, saved, "current/")
            self.best.values = {int(k.split("/")[1]): saved[k] for k in saved.files if k.startswith("best/")}
            _assign_list(random_state_variables(model), saved, "random/")

    def save_epoch(self, record: dict, model, optimizer, optimizer_phase: str, wall_seconds: dict) -> bool:
        """Records a finished epoch (`record["epoch"]` counts from 1); True if it is the best so far."""
        state = self.state
        improved = record.get("val_loss") is not None and (
            state.best_val_loss is None or record["val_loss"] < state.best_val_loss
        )
        if improved:
            state.best_epoch, state.best_val_loss = record["epoch"], record["val_loss"]
            self.best.values = _changeable_values(model, self._all_weights)
        name = f"epoch-{record['epoch']:04d}.npz"
        self._save_checkpoint(name, model, optimizer)
        state.history = [r for r in state.history if r["epoch"] < record["epoch"]] + [record]
        state.completed_epochs = record["epoch"]
        state.checkpoint_file, state.optimizer_phase, state.position = name, optimizer_phase, None
        state.wall_seconds = dict(wall_seconds)
        self._write_state()
        atomic.write_json(self.file(HISTORY), state.history)
        self._remove_stale_files(keep={name, INITIAL_WEIGHTS, STATE_FILE})
        return improved

    def save_step(self, model, optimizer, phase: str, epoch: int, step: int, metrics: list, wall_seconds: dict) -> None:
        """Records `step` steps done of (0-based) epoch `epoch`: the model, its optimizer, the random
        generators and the epoch's metric totals so far, for a resume at that step."""
        name = f"step-{epoch + 1:04d}-{step:06d}.npz"
        self._save_checkpoint(name, model, optimizer, metrics)
        state = self.state
        state.checkpoint_file, state.optimizer_phase = name, phase
        state.position = {"epoch": epoch, "step": step, "phase": phase}
        state.wall_seconds = dict(wall_seconds)
        self._write_state()
        self._remove_stale_files(keep={name, INITIAL_WEIGHTS, STATE_FILE})

    def saved_metrics(self) -> list[np.ndarray]:
        """The epoch's metric totals a step checkpoint holds (empty for an epoch's)."""
        with np.load(os.path.join(self.checkpoint_dir, self.state.checkpoint_file)) as saved:
            count = sum(1 for k in saved.files if k.startswith("metrics/"))
            return [saved[f"metrics/{i}"] for i in range(count)]

    def _save_checkpoint(self, name: str, model, optimizer, metrics: list | None = None) -> None:
        store = {}
        optimizer.save_own_variables(store)
        current = _changeable_values(model, self._all_weights)
        _save_npz_atomic(
            os.path.join(self.checkpoint_dir, name),
            {
                **{f"current/{i}": value for i, value in current.items()},
                **{f"best/{i}": value for i, value in self.best.values.items()},
                **{f"optimizer/{key}": value for key, value in store.items()},
                **{f"random/{i}": v.numpy() for i, v in enumerate(random_state_variables(model))},
                **{f"metrics/{i}": np.asarray(value) for i, value in enumerate(metrics or [])},
            },
        )

    def _write_state(self) -> None:
        atomic.write_json(os.path.join(self.checkpoint_dir, STATE_FILE), dataclasses.asdict(self.state))

    def record_early_stop(self, phase: str, epoch: int) -> None:
        """Notes that `phase` ended at `epoch` on a validation plateau, so a resumed run does not reopen it."""
        self.state.stopped_early[phase] = epoch
        self._write_state()

    def restore_optimizer(self, optimizer, variables, phase: str) -> bool:
        """Loads the optimizer state saved by `phase`; False when there is none to load."""
        if not self.state.checkpoint_file or self.state.optimizer_phase != phase:
            return False
        optimizer.build(variables)
        with np.load(os.path.join(self.checkpoint_dir, self.state.checkpoint_file)) as saved:
            store = {k[len("optimizer/") :]: saved[k] for k in saved.files if k.startswith("optimizer/")}
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


def _changeable_values(model, all_weights: bool = False) -> dict[int, np.ndarray]:
    """{index in model.weights: value} of the variables training can change now."""
    if all_weights:
        return {i: v.numpy() for i, v in enumerate(model.weights)}
    index = {id(v): i for i, v in enumerate(model.weights)}
    return {index[id(v)]: v.numpy() for v in model.trainable_variables}


def random_state_variables(model) -> list:
    """The states of the model's random generators (Keras' SeedGenerator: dropout, augmentation), in a
    fixed order: variables of the model that are not its weights."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _assign_list(variables, saved, prefix: str) -> None:
    for i, variable in enumerate(variables):
        if f"{prefix}{i}" in saved.files:
            variable.assign(saved[f"{prefix}{i}"])


def _assign_values(model, values: dict[int, np.ndarray]) -> None:
    weights = model.weights
    for i, value in values.items():
        weights[i].assign(value)


def _assign(model, saved, prefix: str) -> None:
    _assign_values(model, {int(k[len(prefix) :]): saved[k] for k in saved.files if k.startswith(prefix)})
