"""bin/pretrain: a base trained from scratch on tfpipe_fractals, resumable, loadable by --weights=PATH."""

import hashlib
import os

import keras
import numpy as np
import pytest
from helpers import tiny_backbone
from helpers.runs import read_json
from helpers.tools import assert_one_line_error, run_tool

from tfpipe.data.pipeline import PipelineConfig
from tfpipe.errors import TfpipeError
from tfpipe.models import backbones
from tfpipe.training.pretrain import BASE_WEIGHTS, PretrainConfig, pretrain
from tfpipe.training.train import train

TINY_FRACTALS = "tfpipe_fractals/tiny"  # 4 classes, 40 images of 32 px


class Interrupt(Exception):
    pass


class InterruptAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epoch:
            raise Interrupt()


def _tiny_pretrain_config(tmp_path, data_dir, **overrides):
    values = dict(
        model_dir=str(tmp_path / "pretrain"),
        dataset=TINY_FRACTALS,
        data_dir=data_dir,
        train_split="train[:80%]",
        val_split="train[80%:]",
        pipeline=PipelineConfig(image_size=32, batch_size=8, seed=1),
        backbone=tiny_backbone.NAME,  # pretrain's own mechanics: resume, the weights file, the line to use it
        epochs=2,
        verbose=0,
    )
    values.update(overrides)
    return PretrainConfig(**values)


@pytest.mark.slow
def test_pretrain_resumes_and_writes_weights_that_train_loads(tmp_path, data_dir):
    config = _tiny_pretrain_config(tmp_path, data_dir)
    with pytest.raises(Interrupt):
        pretrain(config, extra_callbacks=(InterruptAfterEpoch(1),), log=lambda _: None)
    messages = []
    results = pretrain(config, log=messages.append)
    assert any("Resuming" in m and "after epoch 1" in m for m in messages)
    assert [r["epoch"] for r in read_json(os.path.join(config.model_dir, "history.json"))] == [1, 2]
    weights_file = os.path.join(config.model_dir, BASE_WEIGHTS)
    assert results["weights_file"] == weights_file and results["num_classes"] == 4
    # The record's accuracy is its best epoch's, as history.json has it; the sha256 is the file's.
    history = read_json(os.path.join(config.model_dir, "history.json"))
    best = next(record for record in history if record["epoch"] == results["best_epoch"])
    assert results["val_accuracy"] == best["val_accuracy"] and results["val_loss"] == best["val_loss"]
    assert results["best_epoch"] == min(history, key=lambda record: record["val_loss"])["epoch"]
    assert results["sha256"] == hashlib.sha256(open(results["weights_file"], "rb").read()).hexdigest()

    # The file is a no-top base: it loads into a base of another image size.
    base = backbones.get(tiny_backbone.NAME).build_base(48, weights_file)
    reference = backbones.get(tiny_backbone.NAME).build_base(32, None)
    reference.load_weights(weights_file)
    for expected, actual in zip(reference.weights, base.weights, strict=True):
        np.testing.assert_array_equal(expected.numpy(), actual.numpy())
    # BatchNorm statistics were learned too: not the initial zeros and ones.
    assert not np.allclose(base.get_layer("stem_bn").moving_mean.numpy(), 0.0)

    run = train(
        _downstream(tmp_path, data_dir, weights=weights_file),
        log=messages.append,
    )
    assert run["weights_used"] == weights_file
    trained = keras.models.load_model(os.path.join(tmp_path, "run", "final.keras"))
    np.testing.assert_array_equal(
        trained.get_layer("base").base.get_layer("stem_conv").kernel.numpy(), base.get_layer("stem_conv").kernel.numpy()
    )


def _downstream(tmp_path, data_dir, **overrides):
    from helpers.runs import tiny_train_config

    # The pretrained base is the tiny test base (_tiny_pretrain_config), as tiny_train_config's.
    return tiny_train_config(tmp_path, data_dir, initial_epochs=1, fine_tune_epochs=0, **overrides)


def test_pretrain_command_shows_progress_and_where_the_weights_are(tmp_path, data_dir):
    model_dir = tmp_path / "cli"
    result = run_tool(
        "pretrain",
        f"--backbone={tiny_backbone.NAME}",
        f"--dataset={TINY_FRACTALS}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        "--train_split=train[:80%]",
        "--val_split=train[80%:]",
        "--image_size=32",
        "--batch_size=8",
        "--epochs=2",
        timeout=300,
        tiny_base=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shown = result.stdout + result.stderr  # Keras' progress bar goes where Keras logs
    assert "Epoch 2/2" in shown and "val_accuracy" in shown
    # The line to use them names the backbone and width: the default backbone is another one.
    assert f"train --backbone={tiny_backbone.NAME} --alpha=1 --weights={model_dir / BASE_WEIGHTS}" in result.stdout
    assert (model_dir / BASE_WEIGHTS).is_file()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"epochs": 0}, "--epochs=0 must be at least 1"),
        ({"val_split": ""}, "--val_split is empty"),
        ({"train_split": "train[:80"}, "not a valid split"),
        ({"pipeline": PipelineConfig(image_size=32, batch_size=64)}, "fewer than one batch"),
        ({"dataset": "tfpipe_fractals/huge"}, "tfpipe_fractals/huge"),
    ],
)
def test_bad_input_fails_before_pretraining(tmp_path, data_dir, overrides, message):
    with pytest.raises(TfpipeError, match=message):
        pretrain(_tiny_pretrain_config(tmp_path, data_dir, **overrides), log=lambda _: None)
    assert not os.path.exists(os.path.join(tmp_path, "pretrain", "history.json"))


def test_pretrain_reports_bad_input_in_one_line(tmp_path, data_dir):
    result = run_tool("pretrain", f"--data_dir={data_dir}", f"--model_dir={tmp_path}", "--epochs=-1", timeout=300)
    assert_one_line_error(result, "pretrain", "--epochs=-1 must be at least 1")
