"""Trains the same short run on one CPU device and mirrored over two logical CPUs;
prints, as one JSON line, the largest weight difference and what each run scored.
Run as a script: logical devices must be configured before TensorFlow initializes,
so it cannot share a pytest process.

Usage: DATA_DIR OUT_DIR [JSON of TrainConfig overrides]. Both runs use the tiny test base
(helpers.tiny_backbone) from random weights: its convolutions and BatchNorm layers are what
an empty replica batch breaks with oneDNN on."""

import json
import os
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
from helpers import tiny_backbone  # noqa: E402
from helpers.runs import TINY_BASE_SETTINGS  # noqa: E402

from tfpipe.data.pipeline import PipelineConfig  # noqa: E402
from tfpipe.training.train import TrainConfig, train  # noqa: E402

data_dir, out_dir = sys.argv[1], sys.argv[2]
overrides = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
tiny_backbone.register()
runs = {}
for name, strategy in (
    ("one_device", tf.distribute.OneDeviceStrategy("/cpu:0")),
    ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
):
    settings = dict(
        model_dir=f"{out_dir}/{name}",
        **TINY_BASE_SETTINGS,
        data_dir=data_dir,
        pipeline=PipelineConfig(image_size=32, batch_size=8, seed=1),
        augment="none",
        dropout=0.0,
        fast_feature_extraction=False,
        cached_fine_tuning=False,  # end to end through the whole base, unless a case asks
        initial_epochs=1,
        fine_tune_epochs=1,
        learning_rate=1e-3,
        export=False,
        verbose=0,
    )
    settings.update(overrides)
    logged = []
    results = train(TrainConfig(**settings), strategy=strategy, log=logged.append)
    model = keras.models.load_model(f"{out_dir}/{name}/final.keras")
    with open(f"{out_dir}/{name}/history.json") as f:
        history = json.load(f)
    with open(f"{out_dir}/{name}/evaluation/report.json") as f:
        test_report = json.load(f)
    runs[name] = {
        "weights": [w.numpy() for w in model.weights],
        "replicas": strategy.num_replicas_in_sync,
        "results": results,
        "history": history,
        "test_examples": test_report["examples"],
        "log": logged,
    }
one, mirrored = runs["one_device"]["weights"], runs["mirrored"]["weights"]
print(
    json.dumps(
        {
            "max_abs_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one, mirrored)),
            **{
                key: {name: run[key] for name, run in runs.items()}
                for key in ("replicas", "history", "test_examples", "log")
            },
            "results": {name: run["results"] for name, run in runs.items()},
        }
    )
)
