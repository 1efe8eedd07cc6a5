"""Fitting a phase so that a kill at any moment loses minutes, not an epoch.

    --checkpoint_every=10m | 500steps | epoch

Every epoch's order is a function of the run's data seed and the epoch (data.order), so
the training data of a phase is one stream of epochs, fitted with steps_per_epoch, that can
start at any (epoch, step). Inside an epoch, a StepCheckpoint saves, atomically as the
epoch-end checkpoints are saved (runs.state): the model, the optimizer, the position, the
epoch's metric totals so far and the random generators' states. A run resumed from such a
save first fits the rest of that epoch (its metrics restored, so the epoch's loss and
accuracy count every example once), then the phase's later epochs: it sees exactly the
examples the uninterrupted epoch had not yet trained on, in the same order, and ends with
the weights the uninterrupted run ends with.

Where a position cannot be restored exactly (the tf.data service hands out its own order),
the run says so and restarts the epoch. Fast feature extraction and cached fine-tuning
restart their one pass over the images after a kill (its outputs are held in memory, and
writing them out would cost as much disk as the outputs themselves); the epochs trained on
them resume inside, as any other.
"""

from __future__ import annotations

import dataclasses
import re
import time

import keras
import numpy as np

from tfpipe.errors import TfpipeError

DEFAULT_EVERY = "10m"
EPOCH_ONLY = ("epoch", "off", "0")
_UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclasses.dataclass(frozen=True)
class Every:
    """When to save inside an epoch: every `seconds` of training, or every `steps` steps; neither:
    at epoch ends only."""

    seconds: float | None = None
    steps: int | None = None

    @classmethod
    def parse(cls, text: str, *, flag: str = "checkpoint_every") -> Every:
        value = str(text).strip().lower()
        if value in EPOCH_ONLY:
            return cls()
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|steps?)", value)
        if not match or float(match.group(1)) <= 0:
            raise TfpipeError(
                f"--{flag}={text!r}: give a duration (30s, 10m, 1h), a step count (500steps), or 'epoch' to save "
                "at epoch ends only"
            )
        number, unit = float(match.group(1)), match.group(2)
        if unit.startswith("step"):
            if number != int(number):
                raise TfpipeError(f"--{flag}={text!r}: a step count is a whole number")
            return cls(steps=int(number))
        return cls(seconds=number * _UNITS[unit])

    @property
    def inside_epochs(self) -> bool:
        return self.seconds is not None or self.steps is not None

    def describe(self) -> str:
        if self.steps:
            return f"every {self.steps} steps"
        if self.seconds:
            return f"every {self.seconds / 60:g} minutes" if self.seconds >= 60 else f"every {self.seconds:g} s"
        return "at epoch ends"


class StepCheckpoint(keras.callbacks.Callback):
    """Saves the run inside an epoch when `every` says (runs.state.RunDirectory.save_step).

    `classifier` is the whole model checkpointed (also when only its head or top is fit);
    `first_step`: the steps of the first epoch done before this fit (a resumed epoch)."""

    def __init__(self, run_dir, classifier, phase: str, clock, every: Every, steps_per_epoch: int, first_step=0):
        super().__init__()
        self.run_dir, self.classifier, self.phase, self.clock = run_dir, classifier, phase, clock
        self.every, self.steps_per_epoch, self.first_step = every, steps_per_epoch, first_step
        self.saves, self.save_seconds = 0, 0.0
        self._epoch, self._offset, self._last = 0, first_step, time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        self._offset = 0  # later epochs start at their first step
        self._last = time.monotonic()  # the epoch's own checkpoint was just written

    def on_train_batch_end(self, batch, logs=None):
        step = self._offset + batch + 1  # steps of this epoch done
        if step >= self.steps_per_epoch or not self._due(step):
            return
        started = time.monotonic()
        metrics = [v.numpy() for v in self.model.metrics_variables]
        self.run_dir.save_step(
            self.classifier, self.model.optimizer, self.phase, self._epoch, step, metrics, self.clock.snapshot()
        )
        self.saves += 1
        self.save_seconds += time.monotonic() - started
        self._last = time.monotonic()

    def _due(self, step: int) -> bool:
        if self.every.steps:  # by the step count: every worker decides alike
            return (self._epoch * self.steps_per_epoch + step) % self.every.steps == 0
        return self.every.seconds is not None and time.monotonic() - self._last >= self.every.seconds


class RestoreMetrics(keras.callbacks.Callback):
    """Adds back the totals a resumed epoch's metrics had reached when it was saved, so its loss and
    accuracy are the whole epoch's. Added after the first step, not set at the epoch's start: Keras
    builds the compiled metrics' variables in that step, and every total here is a sum."""

    def __init__(self, values: list[np.ndarray]):
        super().__init__()
        self.values = values

    def on_train_batch_end(self, batch, logs=None):
        if self.values is None:
            return
        variables = self.model.metrics_variables
        if len(variables) != len(self.values):
            raise TfpipeError(
                f"the checkpoint holds {len(self.values)} metric totals, this run's model {len(variables)}: "
                "it is not from this configuration; pass --overwrite"
            )
        for variable, value in zip(variables, self.values):
            variable.assign_add(value)
        self.values = None  # once: the epoch's later steps add their own


def resume_point(run_dir, phase: str, first: int) -> tuple[int, int]:
    """(first epoch, steps of it already done) where `phase` continues: the saved position when it is
    inside this phase, else `first` from its start."""
    position = run_dir.state.position
    if position and position["phase"] == phase and position["epoch"] >= first:
        return position["epoch"], position["step"]
    return first, 0


def fit_resumable(
    model,
    *,
    run_dir,
    checkpointed,
    phase: str,
    first: int,
    end: int,
    steps: int | None,
    train_stream,
    validation,
    every: Every,
    clock,
    callbacks: list,
    verbose,
    log,
) -> list[StepCheckpoint]:
    """Fits `model` over epochs first .. end-1 of `phase`, from inside an epoch where run_dir saved
    one: the rest of that epoch (its metrics restored), then the later epochs. Returns the fits'
    StepCheckpoints (their saves and seconds).

    checkpointed: the model the checkpoints hold (the whole classifier, when `model` is its head).
    steps: an epoch's steps; None for the data service, whose epochs restart instead.
    train_stream((first, end, start_step)): the training batches of those epochs (data.order)."""
    first, done = resume_point(run_dir, phase, first)
    if done and steps is None:
        log(f"Restarting epoch {first + 1}: the tf.data service cannot restore a position inside an epoch")
        done = 0
    parts = [(first, first + 1, done)] if done else []
    if first + bool(done) < end:
        parts.append((first + bool(done), end, 0))
    savers = []
    for begin, stop, start in parts:
        if phase in run_dir.state.stopped_early:
            break
        extra = []
        if start:
            log(f"Resuming epoch {begin + 1} at step {start} of {steps}")
            extra.append(RestoreMetrics(run_dir.saved_metrics()))  # before a save at this step reads them
        if steps is not None and every.inside_epochs:
            savers.append(StepCheckpoint(run_dir, checkpointed, phase, clock, every, steps, first_step=start))
            extra.append(savers[-1])
        model.fit(
            train_stream((begin, stop, start)),
            validation_data=validation,
            shuffle=False,  # each epoch's order is the pipeline's (data.order)
            initial_epoch=begin,
            epochs=stop,
            steps_per_epoch=None if steps is None else steps - start,
            verbose=verbose,
            callbacks=[*extra, *callbacks],
        )
    return savers
