"""Where a training epoch's time goes: computing its steps, or waiting for their input.

Each training step records, inside its own graph, two timestamps: when it has its batch
(after the iterator's get_next returned) and when its update is done; their differences add
up, per replica, in one variable (models.step_timer). An epoch's training time T runs from its
start (for a fit's first epoch, from the end of its first step, which traces the function) to
the start of its validation; compute C is the summed step time (over the replicas,
divided by their number, as they run side by side); the input wait is (T - C) / T, the
share of the epoch the model spent without a batch to work on. It also holds Keras' own loop
between steps, measured at well under a millisecond a step (BUILD_NOTES.md, "Where the time
goes"). Measured where the step runs: on each replica, and with the tf.data service, on the
trainer. With --jit_compile the step is one XLA program, which TensorFlow's timestamp op
cannot enter, so the wait is not measured there.
"""

from __future__ import annotations

import time

import keras

from tfpipe.models import step_timer
from tfpipe.models.step_timer import StepSeconds


def measuring(model, strategy, *, jit_compile: bool, log) -> list:
    """[InputWait] for a fit of `model` (its step timer attached), or [] under --jit_compile, said once."""
    if jit_compile:
        if not getattr(model, "_tfpipe_said_no_timer", False):
            log("Input wait: not measured with --jit_compile (TensorFlow's timestamp op cannot run in XLA)")
            object.__setattr__(model, "_tfpipe_said_no_timer", True)
        return []
    return [InputWait(step_timer.attach(model, strategy), log)]


class InputWait(keras.callbacks.Callback):
    """Per epoch: training seconds, compute seconds and the input wait, added to the epoch's logs
    (history.json, TensorBoard and the progress bar read them) and said in one line.

    A fit's first step traces the training function (seconds, neither computing nor waiting), so
    the first epoch of each fit is timed from the end of its first step."""

    def __init__(self, timer: StepSeconds, log):
        super().__init__()
        self.timer, self.log = timer, log
        self._started = self._trained = None
        self._traced = False

    def on_epoch_begin(self, epoch, logs=None):
        self.timer.reset()
        self._started = time.perf_counter() if self._traced else None
        self._trained = None

    def on_train_batch_end(self, batch, logs=None):
        if self._started is None:  # the fit's first step, tracing included, is done: time from here
            self.timer.reset()
            self._started, self._traced = time.perf_counter(), True

    def on_test_begin(self, logs=None):
        if self._started is not None and self._trained is None:  # validation starts: training ended
            self._trained = time.perf_counter() - self._started

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or self._started is None:
            return
        trained = self._trained if self._trained is not None else time.perf_counter() - self._started
        self._started = None
        if trained <= 0:
            return
        compute = min(self.timer.seconds(), trained)
        wait = (trained - compute) / trained
        logs.update(input_wait=wait, training_seconds=trained)
        self.log(
            f"Epoch {epoch + 1}: input wait {wait:.0%} ({trained - compute:.1f} s of {trained:.1f} s training; "
            f"the steps computed {compute:.1f} s)"
        )


def share(records: list[dict]) -> float | None:
    """The input wait of several epochs' records: their waiting seconds over their training seconds."""
    timed = [r for r in records if r.get("input_wait") is not None and r.get("training_seconds")]
    total = sum(r["training_seconds"] for r in timed)
    return sum(r["input_wait"] * r["training_seconds"] for r in timed) / total if total else None
