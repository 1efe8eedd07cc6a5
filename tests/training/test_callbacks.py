"""The callbacks around fit, on a two-layer model: recording epochs, the phase clock, the NaN stop."""

import time

import keras
import numpy as np

from tfpipe.runs.state import RunDirectory
from tfpipe.training import callbacks


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse", metrics=["mae"])
    return model


def test_the_epoch_recorder_checkpoints_every_finished_epoch(tmp_path):
    model = _model()
    x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
    with RunDirectory(str(tmp_path), {}) as run:
        run.start(model)
        recorder = callbacks.EpochRecorder(run, model, "phase_a", callbacks.PhaseClock({}))
        model.fit(x, y, validation_data=(x, y), epochs=3, initial_epoch=1, verbose=0, callbacks=[recorder])
        assert run.state.completed_epochs == 3
        records = run.state.history
    assert [r["epoch"] for r in records] == [2, 3]  # Keras counts from 0, the record from 1
    assert all(r["phase"] == "phase_a" and r["learning_rate"] == np.float32(0.01) for r in records)
    assert records[1]["val_loss"] < records[0]["val_loss"]


def test_a_diverged_epoch_is_not_recorded_and_the_run_stops_at_its_first_bad_batch(tmp_path):
    model = _model()
    x = np.ones((16, 3), "float32")
    x[5] = np.nan  # the second batch of 4
    stopper = callbacks.StopOnNonFiniteLoss()
    with RunDirectory(str(tmp_path), {}) as run:
        run.start(model)
        recorder = callbacks.EpochRecorder(run, model, "phase", callbacks.PhaseClock({}))
        history = model.fit(
            x, np.zeros((16, 1)), batch_size=4, epochs=5, shuffle=False, verbose=0, callbacks=[stopper, recorder]
        )
        assert run.state.completed_epochs == 0
    assert stopper.stopped_at_epoch == 1 and len(history.history["loss"]) == 1


def test_the_phase_clock_adds_to_the_seconds_carried_over():
    clock = callbacks.PhaseClock({"a": 10.0})
    clock.start("a")
    time.sleep(0.05)
    assert clock.snapshot()["a"] > 10.04  # counting while the phase runs
    clock.stop()
    frozen = clock.snapshot()["a"]
    time.sleep(0.02)
    assert clock.snapshot()["a"] == frozen  # and not after it stops
    clock.start("b")
    clock.stop()
    assert set(clock.snapshot()) == {"a", "b"} and clock.snapshot()["b"] < 1
