"""RunDirectory on its own, with a two-layer model: resume, best against current, refusals."""

import os

import keras
import numpy as np
import pytest
from helpers.runs import read_json

from tfpipe.errors import TfpipeError
from tfpipe.runs.files import CHECKPOINT_DIR, HISTORY, STATE_FILE
from tfpipe.runs.state import RunDirectory


def _model(frozen_first=True):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="frozen"), keras.layers.Dense(1)])
    model.get_layer("frozen").trainable = not frozen_first
    return model


def _set_trainable(model, value):
    for variable in model.trainable_variables:
        variable.assign(np.full(variable.shape, value, "float32"))


def _trainable(model):
    return [v.numpy().copy() for v in model.trainable_variables]


def _epoch(run, model, epoch, val_loss):
    optimizer = keras.optimizers.SGD()
    optimizer.build(model.trainable_variables)
    record = {"epoch": epoch, "loss": 1.0, "val_loss": val_loss}
    return run.save_epoch(record, model, optimizer, "phase", {"phase": float(epoch)})


def test_resume_brings_back_the_last_epoch_and_the_frozen_weights(tmp_path):
    model = _model()
    frozen = [w.numpy().copy() for w in model.get_layer("frozen").weights]
    with RunDirectory(str(tmp_path), {"lr": 1}) as run:
        run.start(model)
        _set_trainable(model, 1.0)
        _epoch(run, model, 1, val_loss=0.5)
        _set_trainable(model, 2.0)
        _epoch(run, model, 2, val_loss=0.7)
    fresh = _model()
    fresh.get_layer("frozen").kernel.assign(np.zeros((3, 4), "float32"))  # anything: it must come back
    with RunDirectory(str(tmp_path), {"lr": 1}) as run:
        assert run.resumed and run.state.completed_epochs == 2 and run.state.best_epoch == 1
        run.start(fresh)
        assert all(np.all(v == 2.0) for v in _trainable(fresh))
        for saved, restored in zip(frozen, fresh.get_layer("frozen").weights):
            np.testing.assert_array_equal(saved, restored.numpy())
    history = read_json(tmp_path / HISTORY)
    assert [r["epoch"] for r in history] == [1, 2]


def test_best_is_kept_apart_from_current(tmp_path):
    model = _model()
    with RunDirectory(str(tmp_path), {}) as run:
        run.start(model)
        _set_trainable(model, 1.0)
        assert _epoch(run, model, 1, val_loss=0.5) is True
        _set_trainable(model, 2.0)
        assert _epoch(run, model, 2, val_loss=0.9) is False
        assert run.best.save_model(model, str(tmp_path / "best.keras"))
        assert all(np.all(v == 2.0) for v in _trainable(model))  # saving the best leaves the current
        best = keras.models.load_model(str(tmp_path / "best.keras"))
        assert all(np.all(v.numpy() == 1.0) for v in best.layers[-1].weights)
        run.best.load_into(model)
        assert all(np.all(v == 1.0) for v in _trainable(model))


def test_another_configuration_is_refused_naming_what_changed(tmp_path):
    with RunDirectory(str(tmp_path), {"lr": 1, "size": 160}) as run:
        run.start(_model())
        _epoch(run, _model(), 1, val_loss=0.5)
    with pytest.raises(TfpipeError, match=r"different configuration \(lr: 1 -> 2\)"):
        RunDirectory(str(tmp_path), {"lr": 2, "size": 160})


def test_overwrite_clears_the_run_and_keeps_the_users_files(tmp_path):
    with RunDirectory(str(tmp_path), {"lr": 1}) as run:
        run.start(_model())
        _epoch(run, _model(), 1, val_loss=0.5)
    (tmp_path / "notes.txt").write_text("mine")
    with RunDirectory(str(tmp_path), {"lr": 2}, overwrite=True) as run:
        assert not run.resumed
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert not (tmp_path / HISTORY).exists()


def test_an_unreadable_state_is_a_clear_error(tmp_path):
    os.makedirs(tmp_path / CHECKPOINT_DIR)
    (tmp_path / CHECKPOINT_DIR / STATE_FILE).write_text("{not json")
    with pytest.raises(TfpipeError, match="unreadable.*--overwrite"):
        RunDirectory(str(tmp_path), {})
