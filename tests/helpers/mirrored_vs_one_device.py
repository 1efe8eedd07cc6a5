"""Trains the same short run on one CPU device and mirrored over two logical CPUs, for each of
several cases; prints, as one JSON line, each case's largest weight difference and what each run
scored. Run as a script: logical devices must be configured before TensorFlow initializes, so it
cannot share a pytest process.

Usage: DATA_DIR OUT_DIR JSON_CASES, where JSON_CASES maps a case's name to its TrainConfig
overrides. Both runs use the tiny test base (helpers.tiny_backbone) from random weights: its
convolutions and BatchNorm layers are what an empty replica batch breaks with oneDNN on, and its
fine-tune boundaries give cached activations of one tensor (layer 9) or two (layer 10)."""

import json
import os
import sys
import traceback

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for helpers
from helpers import tiny_backbone  # noqa: E402
from helpers.runs import TINY_BASE_SETTINGS  # noqa: E402

from tfpipe.data.pipeline import PipelineConfig  # noqa: E402
from tfpipe.training import distribute  # noqa: E402
from tfpipe.training.train import TrainConfig, train  # noqa: E402


def read(path):
    with open(path) as f:
        return json.load(f)


def run_case(out_dir: str, overrides: dict) -> dict:
    runs = {}
    for name, strategy in (
        ("one_device", distribute.make_strategy("one_device")),
        # Made for each case as a user's run makes it: a second MirroredStrategy in one process
        # must not break the runs after the first (distribute.make_strategy).
        ("mirrored", distribute.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])),
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
        runs[name] = {
            "weights": [w.numpy() for w in model.weights],
            "replicas": strategy.num_replicas_in_sync,
            "results": results,
            "history": read(f"{out_dir}/{name}/history.json"),
            "test_examples": read(f"{out_dir}/{name}/evaluation/report.json")["examples"],
            "log": logged,
        }
    one, mirrored = runs["one_device"]["weights"], runs["mirrored"]["weights"]
    return {
        "max_abs_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one, mirrored)),
        **{
            key: {name: run[key] for name, run in runs.items()}
            for key in ("replicas", "history", "test_examples", "log", "results")
        },
    }


def run_or_report(out_dir: str, overrides: dict) -> dict:
    """A case's report, or the error that ended it, so that one failing case fails only its test."""
    try:
        return run_case(out_dir, overrides)
    except Exception:
        return {"error": traceback.format_exc()[-3000:]}


data_dir, out_dir = sys.argv[1], sys.argv[2]
cases = json.loads(sys.argv[3])
tiny_backbone.register()
print(json.dumps({case: run_or_report(f"{out_dir}/{case}", overrides) for case, overrides in cases.items()}))
