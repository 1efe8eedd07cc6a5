"""What a run does around Keras' fit: time its phases, record every epoch in the run
directory (the checkpoint a resumed run starts from, the best weights so far), and
stop at a non-finite loss."""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from tfpipe.runs.state import RunDirectory


def learning_rate_of(optimizer) -> float:
    return float(np.asarray(keras.ops.convert_to_numpy(optimizer.learning_rate)))


class PhaseClock:
    """Wall seconds per phase, carried over from the runs this one resumes."""

    def __init__(self, carried: dict):
        self.seconds = dict(carried)
        self._phase = None
        self._started = None

    def start(self, phase: str) -> None:
        self._phase, self._started = phase, time.monotonic()

    def stop(self) -> None:
        if self._phase is not None:
            self.seconds[self._phase] = self.snapshot()[self._phase]
            self._phase = None

    def snapshot(self) -> dict:
        seconds = dict(self.seconds)
        if self._phase is not None:
            seconds[self._phase] = seconds.get(self._phase, 0.0) + time.monotonic() - self._started
        return seconds


class EpochRecorder(keras.callbacks.Callback):
    """After each epoch: its history record and the state a resumed run starts from.

    `classifier` is the full model, also when the model being fit is only its head.
    """

    def __init__(self, run_dir: RunDirectory, classifier, phase: str, clock: PhaseClock):
        super().__init__()
        self.run_dir = run_dir
        self.classifier = classifier
        self.phase = phase
        self.clock = clock

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None or not math.isfinite(loss):
            return  # a diverged epoch is not a state to resume from
        record = {
            "epoch": epoch + 1,
            "phase": self.phase,
            "loss": float(loss),
            "accuracy": _float_or_none(logs.get("accuracy")),
            "val_loss": _float_or_none(logs.get("val_loss")),
            "val_accuracy": _float_or_none(logs.get("val_accuracy")),
            "learning_rate": learning_rate_of(self.model.optimizer),
            "finished_at": time.time(),  # Unix time: bench_train reads time to accuracy from it
            # training.input_wait (before this callback): the share of the epoch without a batch
            "input_wait": _float_or_none(logs.get("input_wait")),
            "training_seconds": _float_or_none(logs.get("training_seconds")),
        }
        self.run_dir.save_epoch(record, self.classifier, self.model.optimizer, self.phase, self.clock.snapshot())


def epochs_without_improvement(val_losses) -> int:
    """Keras' EarlyStopping wait for val_loss (min_delta 0): epochs since the last one whose loss was
    strictly lower than every earlier one's."""
    best, wait = math.inf, 0
    for loss in val_losses:
        if loss < best:
            best, wait = loss, 0
        else:
            wait += 1
    return wait


class StopAtPlateau(keras.callbacks.Callback):
    """--early_stopping: Keras' EarlyStopping on val_loss with this patience, one phase at a time, counted
    from the run's recorded history (not from memory), so a resumed run stops where an uninterrupted one
    would. The stop is recorded in the run's state; runs after EpochRecorder."""

    def __init__(self, run_dir: RunDirectory, phase: str, patience: int):
        super().__init__()
        self.run_dir, self.phase, self.patience = run_dir, phase, patience

    def on_epoch_end(self, epoch, logs=None):
        records = [r for r in self.run_dir.state.history if r["phase"] == self.phase and r["val_loss"] is not None]
        if epochs_without_improvement([r["val_loss"] for r in records]) >= self.patience:
            self.model.stop_training = True
            self.run_dir.record_early_stop(self.phase, epoch + 1)


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first batch whose loss is NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.stopped_at_epoch = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.stopped_at_epoch = self._epoch + 1
            self.model.stop_training = True


def _float_or_none(value):
    return None if value is None else float(value)
