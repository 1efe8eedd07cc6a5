"""Runs a tiny train() and records what every training step saw: a test of resume inside an epoch
kills this process with SIGKILL mid-epoch, runs it again, and compares with an uninterrupted run.

Usage: DATA_DIR MODEL_DIR RECORD_FILE JSON_OVERRIDES [mirrored]

RECORD_FILE gets a line "epoch E" when an epoch (or a resumed epoch's rest) begins, then one line
per training step: the step's example fingerprints (a checksum per image, weighted by position),
padding examples (sample weight 0) left out. Each step also sleeps a little, so that a test can
kill the process between two saves. At the end it prints the final weights' path."""

import json
import os
import sys
import time

import tensorflow as tf

mirrored = len(sys.argv) > 5 and sys.argv[5] == "mirrored"
if mirrored:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
from helpers import tiny_backbone  # noqa: E402
from helpers.runs import TINY_BASE_SETTINGS, TINY_PIPELINE  # noqa: E402

from tfpipe.models.classifier import TransferClassifier  # noqa: E402
from tfpipe.training import distribute  # noqa: E402
from tfpipe.training.train import TrainConfig, train  # noqa: E402

data_dir, model_dir, record_file = sys.argv[1], sys.argv[2], sys.argv[3]
overrides = json.loads(sys.argv[4])
STEP_SECONDS = 0.25


def _append(prints, weights):
    kept = [str(int(p)) for p, w in zip(prints.numpy(), weights.numpy()) if w > 0]
    with open(record_file, "a") as out:
        out.write(" ".join(kept) + "\n")
    time.sleep(STEP_SECONDS)


original_step = TransferClassifier.train_step


def recording_step(self, data):
    x, y, weights = keras.utils.unpack_x_y_sample_weight(data)
    images = tf.cast(x, tf.int64)
    shape = tf.shape(images)[1:]
    position = tf.reshape(tf.range(1, tf.reduce_prod(shape) + 1, dtype=tf.int64) % 251 + 1, shape)
    prints = tf.reduce_sum(images * position, axis=[1, 2, 3])
    weights = tf.ones_like(y, tf.float32) if weights is None else weights
    tf.py_function(_append, [prints, weights], [])
    return original_step(self, data)


TransferClassifier.train_step = recording_step


class MarkEpochs(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        with open(record_file, "a") as out:
            out.write(f"epoch {epoch + 1}\n")


tiny_backbone.register()
settings = dict(
    model_dir=model_dir,
    data_dir=data_dir,
    dataset="tfpipe_shapes/tiny",
    **TINY_BASE_SETTINGS,
    pipeline=TINY_PIPELINE,
    augment="flip=horizontal,rotation=0.1",  # in the model: its random draws must resume too
    fast_feature_extraction=False,
    cached_fine_tuning=False,
    initial_epochs=2,
    fine_tune_epochs=1,
    checkpoint_every="2steps",
    export=False,
    verbose=0,
)
settings.update(overrides)
strategy = distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"]) if mirrored else None
logged = []
train(TrainConfig(**settings), strategy=strategy, extra_callbacks=(MarkEpochs(),), log=logged.append)
weights = [w.numpy() for w in keras.models.load_model(os.path.join(model_dir, "final.keras")).weights]
np.savez(os.path.join(model_dir, "final_weights.npz"), *weights)
print(json.dumps({"log": logged}))
