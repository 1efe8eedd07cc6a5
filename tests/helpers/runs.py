"""The tiny datasets and run settings the tests share, and reading what runs write."""

from __future__ import annotations

import json

from tfpipe import bench

TINY = "tfpipe_shapes/tiny"  # 40 images, 2 classes, 48-96 px
TINY_MULTICLASS = "tfpipe_shapes/tiny_multiclass"  # 40 images, 5 classes


def tiny_train_config(tmp_path, data_dir, **overrides):
    """A TrainConfig for seconds-long runs: the tiny dataset at 32 px, MobileNetV2 at width 0.35."""
    from tfpipe.data.pipeline import PipelineConfig
    from tfpipe.train import TrainConfig

    values = dict(
        model_dir=str(tmp_path / "run"),
        dataset=TINY,
        data_dir=data_dir,
        pipeline=PipelineConfig(image_size=32, batch_size=8, seed=1),
        alpha=0.35,
        initial_epochs=2,
        fine_tune_epochs=2,
        learning_rate=1e-3,
        verbose=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def read_json(path):
    """A JSON output of a run or a tool."""
    with open(path) as f:
        return json.load(f)


def fingerprints(dataset, batches: int = 1000) -> list[int]:
    """A checksum per image of (up to `batches` batches of) one epoch, in order."""
    return [value for batch in bench.batch_fingerprints(dataset, batches) for value in batch]
