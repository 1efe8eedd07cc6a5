"""Trains the same short run on one CPU device and mirrored over two logical CPUs;
prints the largest weight difference. Run as a script: logical devices must be
configured before TensorFlow initializes, so it cannot share a pytest process.

Usage: DATA_DIR OUT_DIR [DATASET [CLASS_WEIGHT]]; a folder: dataset starts from random weights."""

import json
import sys

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

from tfpipe.data.pipeline import PipelineConfig  # noqa: E402
from tfpipe.train import TrainConfig, train  # noqa: E402

data_dir, out_dir = sys.argv[1], sys.argv[2]
dataset = sys.argv[3] if len(sys.argv) > 3 else "tfpipe_shapes/tiny"
class_weight = sys.argv[4] if len(sys.argv) > 4 else "none"
weights = {}
for name, strategy in (
    ("one_device", tf.distribute.OneDeviceStrategy("/cpu:0")),
    ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])),
):
    config = TrainConfig(
        model_dir=f"{out_dir}/{name}",
        dataset=dataset,
        class_weight=class_weight,
        weights="none" if dataset.startswith("folder:") else "auto",
        data_dir=data_dir,
        pipeline=PipelineConfig(image_size=32, batch_size=8, seed=1),
        alpha=0.35,
        augment="none",
        dropout=0.0,
        fast_feature_extraction=False,
        initial_epochs=1,
        fine_tune_epochs=1,
        learning_rate=1e-3,
        export=False,
        verbose=0,
    )
    results = train(config, strategy=strategy, log=lambda _: None)
    import keras

    model = keras.models.load_model(f"{out_dir}/{name}/final.keras")
    weights[name] = ([w.numpy() for w in model.weights], results, strategy.num_replicas_in_sync)
difference = max(float(np.max(np.abs(a - b))) for a, b in zip(weights["one_device"][0], weights["mirrored"][0]))
largest_update = max(float(np.max(np.abs(a))) for a in weights["one_device"][0])
print(
    json.dumps(
        {
            "max_abs_difference": difference,
            "replicas": {k: v[2] for k, v in weights.items()},
            "test_loss": {k: v[1]["test_loss"] for k, v in weights.items()},
            "class_weights": {k: v[1]["class_weights"] for k, v in weights.items()},
        }
    )
)
