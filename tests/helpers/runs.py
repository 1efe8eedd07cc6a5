"""The tiny datasets and run settings the tests share, and reading what runs write."""

from __future__ import annotations

import json

from helpers import tiny_backbone

from tfpipe.bench import pipelines as bench
from tfpipe.data.pipeline import PipelineConfig

TINY = "tfpipe_shapes/tiny"  # 40 images, 2 classes, 48-96 px
TINY_MULTICLASS = "tfpipe_shapes/tiny_multiclass"  # 40 images, 5 classes
# Seconds-long runs: 32 px images in batches of 8.
TINY_PIPELINE = PipelineConfig(image_size=32, batch_size=8, seed=1)
TINY_TRAIN_FLAGS = [
    f"--image_size={TINY_PIPELINE.image_size}",
    f"--batch_size={TINY_PIPELINE.batch_size}",
    f"--seed={TINY_PIPELINE.seed}",
]
# The tiny test base (helpers.tiny_backbone) in place of the default one, for runs whose subject is
# the run's mechanics rather than its base: bin/train flags, and the TrainConfig fields.
TINY_BASE_SETTINGS = dict(backbone=tiny_backbone.NAME, weights="none", fine_tune_at=str(tiny_backbone.FINE_TUNE_AT))
TINY_BASE_FLAGS = [f"--{name}={value}" for name, value in TINY_BASE_SETTINGS.items()]


def tiny_train_config(tmp_path, data_dir, *, real_base=False, **overrides):
    """A TrainConfig for seconds-long runs of the tiny dataset (TINY_PIPELINE) on the tiny test
    base, or with real_base on the default one (EfficientNet-Lite0 with its ImageNet weights).

    A tiny run takes 8 s on the tiny base, 18 s on the real one (12 s of it tracing its graph).
    No augmentation unless asked: both phases then run on cached outputs of the frozen layers.
    The runs that go end to end with augmentation in the model: the session's finished_run, the
    CLI tests (TINY_TRAIN_FLAGS), and the tests that pass augment."""
    from tfpipe.training.train import TrainConfig

    values = dict(
        model_dir=str(tmp_path / "run"),
        dataset=TINY,
        data_dir=data_dir,
        pipeline=TINY_PIPELINE,
        augment="none",
        initial_epochs=2,
        fine_tune_epochs=2,
        learning_rate=1e-3,
        export=False,  # the SavedModel takes 6 s of a 40 s tiny run; the tests of export/ ask for it
        verbose=0,
    )
    if not real_base:
        values.update(TINY_BASE_SETTINGS)
    values.update(overrides)
    return TrainConfig(**values)


def read_json(path):
    """A JSON output of a run or a tool."""
    with open(path) as f:
        return json.load(f)


def fingerprints(dataset, batches: int = 1000) -> list[int]:
    """A checksum per image of (up to `batches` batches of) one epoch, in order."""
    return [value for batch in bench.batch_fingerprints(dataset, batches) for value in batch]
