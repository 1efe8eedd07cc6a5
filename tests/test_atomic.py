"""Outputs survive a failure inside any writer: the previous version stays, the run resumes,
and a full or read-only disk is one line naming what could not be written and where."""

import errno
import json
import os

import keras
import numpy as np
import pytest
from helpers.runs import read_json, tiny_train_config

from tfpipe import atomic
from tfpipe.errors import TfpipeError
from tfpipe.training.train import train


class Killed(Exception):
    """Stands in for a kill in the middle of a write."""


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "history.json"
    atomic.write_json(str(target), [1])
    with pytest.raises(Killed):
        with atomic.replacing(str(target)) as temporary:
            with open(temporary, "w") as out:
                out.write("[1, 2")  # half written
            raise Killed()
    assert read_json(target) == [1]
    assert os.listdir(tmp_path) == ["history.json"]


def test_a_folder_is_replaced_whole(tmp_path):
    target = tmp_path / "export"
    for version in ("old", "new"):
        with atomic.replacing(str(target)) as temporary:
            os.makedirs(temporary)
            (open(os.path.join(temporary, version), "w")).close()
    assert os.listdir(target) == ["new"] and os.listdir(tmp_path) == ["export"]


def test_a_full_disk_is_one_line_saying_what_and_where(tmp_path):
    def full(path, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TfpipeError, match=r"could not write a checkpoint to .*epoch-0001.npz \(No space left"):
        with atomic.replacing(str(tmp_path / "epoch-0001.npz"), what="a checkpoint") as temporary:
            full(temporary)


# Each writer of a run, and a call inside it to break: the failure happens while it writes.
WRITERS = {
    "checkpoint": ("numpy.savez", "epoch-0002"),
    "history.json": ("json.dump", "history"),
    "best.keras": ("keras.Model.save", "best.keras"),
    "final.keras": ("keras.Model.save", "final.keras"),
    "export": ("keras.Model.export", "export"),
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_run_killed_inside_any_writer_resumes(tmp_path, data_dir, monkeypatch, writer):
    target, marker = WRITERS[writer]
    module_name, attribute = target.rsplit(".", 1)
    owner = {"numpy": np, "json": json, "keras.Model": keras.Model}[module_name]
    real = getattr(owner, attribute)

    def breaking(*args, **kwargs):
        for destination in args:
            name = str(getattr(destination, "name", destination))
            if (isinstance(destination, str | os.PathLike) or hasattr(destination, "write")) and marker in name:
                real(*args, **kwargs)
                _tear(destination)  # the process "dies" halfway through the write
                raise Killed()
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attribute, breaking)
    config = tiny_train_config(
        tmp_path, data_dir, initial_epochs=2, fine_tune_epochs=1, augment="none", export=writer == "export"
    )
    with pytest.raises(Killed):
        train(config, log=lambda _: None)
    monkeypatch.setattr(owner, attribute, real)
    _assert_every_output_readable(config.model_dir)
    leftovers = [n for _, _, files in os.walk(config.model_dir) for n in files if n.startswith(".tmp-")]
    assert leftovers == []
    results = train(config, log=lambda _: None)
    with open(os.path.join(config.model_dir, "history.json")) as f:
        assert [r["epoch"] for r in json.load(f)] == [1, 2, 3]
    assert results["epochs"] == 3
    keras.models.load_model(os.path.join(config.model_dir, "final.keras"))
    keras.models.load_model(os.path.join(config.model_dir, "best.keras"))


def _tear(destination):
    """Cuts a just-written file (or a folder's largest file) to half its size."""
    if hasattr(destination, "write"):
        destination.flush()
        destination.truncate(destination.tell() // 2)
        return
    path = str(destination)
    if not os.path.exists(path) and os.path.exists(f"{path}.npz"):
        path = f"{path}.npz"
    if os.path.isdir(path):
        path = max((os.path.join(d, n) for d, _, names in os.walk(path) for n in names), key=os.path.getsize)
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) // 2)


def _assert_every_output_readable(model_dir):
    import tensorflow as tf

    for name in ("best.keras", "final.keras"):
        if os.path.exists(os.path.join(model_dir, name)):
            keras.models.load_model(os.path.join(model_dir, name))
    for name in ("history.json", os.path.join("checkpoint", "state.json")):
        if os.path.exists(os.path.join(model_dir, name)):
            with open(os.path.join(model_dir, name)) as f:
                json.load(f)
    if os.path.exists(os.path.join(model_dir, "export")):
        tf.saved_model.load(os.path.join(model_dir, "export"))


@pytest.mark.slow
def test_a_full_disk_mid_run_stops_with_one_line_and_the_run_resumes(tmp_path, data_dir, monkeypatch):
    real = np.savez
    saved = []

    def full_after_first_epoch(path, **arrays):
        if "epoch-0002" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real(path, **arrays)

    monkeypatch.setattr(np, "savez", full_after_first_epoch)
    config = tiny_train_config(tmp_path, data_dir, initial_epochs=3, fine_tune_epochs=0, augment="none")
    with pytest.raises(
        TfpipeError, match=r"could not write a checkpoint to .*epoch-0002.npz \(No space left on device\)"
    ):
        train(config, log=lambda _: None)
    monkeypatch.setattr(np, "savez", real)
    messages = []
    train(config, log=messages.append)
    assert any("after epoch 1" in m for m in messages)
