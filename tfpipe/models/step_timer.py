"""The seconds a training step computes, measured inside the step (training.input_wait reads them).

Two timestamps around the step's computation and update, taken in the step's own graph (after
its batch arrived, after its assignments), their difference added up per replica.
"""

from __future__ import annotations

import tensorflow as tf

ATTRIBUTE = "_tfpipe_step_seconds"  # on a TransferClassifier; set past Keras' attribute tracking


class StepSeconds:
    """Seconds training steps spent computing, summed per replica (a SyncOnRead variable)."""

    def __init__(self, strategy: tf.distribute.Strategy):
        with strategy.scope():
            self.total = tf.Variable(
                0.0,
                dtype=tf.float64,
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
                name="step_seconds",
            )
        self.replicas = strategy.num_replicas_in_sync

    def reset(self) -> None:
        self.total.assign(0.0)

    def seconds(self) -> float:
        """Compute seconds of the epoch so far, as one replica's (they run side by side)."""
        return float(self.total.read_value()) / self.replicas


def attach(model, strategy) -> StepSeconds:
    """The model's step timer, made once (TransferClassifier.train_step adds to it)."""
    timer = getattr(model, ATTRIBUTE, None)
    if timer is None:
        timer = StepSeconds(strategy)
        # Not through Keras' __setattr__: a tracked variable would join the model's variables
        # (and so its checkpoints and saved files).
        object.__setattr__(model, ATTRIBUTE, timer)
    return timer


def timed_step(model, step, batch):
    """Runs step() (the step's computation and update; it returns a tensor computed last, the loss)
    between two timestamps, adding their difference to the model's timer when it has one."""
    timer = getattr(model, ATTRIBUTE, None)
    if timer is None:
        return step()
    # Explicit dependencies: after the batch arrived; after the loss and every variable's update (a
    # read of each variable comes after its assignment; updates of different variables are not
    # ordered among themselves, so the optimizer's step count alone would end the clock early).
    with tf.control_dependencies(tf.nest.flatten(batch)[:1]):
        started = tf.timestamp()
    result = step()
    done = [tf.nest.flatten(result)[-1]] + [tf.identity(v.value) for v in model.trainable_variables]
    with tf.control_dependencies(done):
        ended = tf.timestamp()
    timer.total.assign_add(ended - started)
    return result
