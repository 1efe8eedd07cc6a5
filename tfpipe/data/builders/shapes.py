"""tfpipe_shapes: the embedded default dataset, a real tfds builder with no downloads.

It stands in for cats_vs_dogs on machines without internet: JPEG images of
varied size (about 200 to 500 px a side), one `train` split to slice like the
transfer-learning tutorial does, and classes told apart by the shapes drawn in
them. Images are drawn procedurally from a seed per example, so every machine
prepares byte-identical data.

    tfds.load("tfpipe_shapes")          # small: 400 images, 2 classes
    tfds.load("tfpipe_shapes/large")    # 6,000 images, for benchmarks
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfpipe.data.builders.drawing import SHAPE_NAMES, draw_scene


@dataclasses.dataclass
class ShapesConfig(tfds.core.BuilderConfig):
    num_images: int = 400
    num_classes: int = 2
    min_side: int = 200
    max_side: int = 500
    seed: int = 0


def _config(name, description, **kwargs):
    return ShapesConfig(name=name, description=description, **kwargs)


class TfpipeShapes(tfds.core.GeneratorBasedBuilder):
    """Procedural shapes as JPEGs: the class is the kind of shape in the picture."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        _config("small", "400 images, 2 classes: keeps a CPU training run short.", num_images=400),
        _config("large", "6,000 images, 2 classes: for input-pipeline benchmarks.", num_images=6000),
        _config("multiclass", "1,000 images, 5 classes.", num_images=1000, num_classes=5),
        _config("tiny", "40 small images, 2 classes: for tests.", num_images=40, min_side=48, max_side=96),
        _config(
            "tiny_multiclass",
            "40 small images, 5 classes: for tests.",
            num_images=40,
            num_classes=5,
            min_side=48,
            max_side=96,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                    "label": tfds.features.ClassLabel(names=SHAPE_NAMES[: self.builder_config.num_classes]),
                }
            ),
            supervised_keys=("image", "label"),
            homepage="https://github.com/tfpipe/tfpipe",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # Everything is drawn locally: nothing to download.
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        config = self.builder_config
        for index in range(config.num_images):
            yield index, render_example(config, index)


def render_example(config: ShapesConfig, index: int) -> dict:
    """The example at `index`: the same bytes on every machine for a given config."""
    rng = np.random.default_rng([config.seed, config.num_classes, index])
    label = index % config.num_classes  # balanced classes; tfds shuffles the order on write
    height, width = _image_size(rng, config.min_side, config.max_side)
    pixels = draw_scene(rng, SHAPE_NAMES[label], height, width)
    jpeg = tf.io.encode_jpeg(pixels, quality=int(rng.integers(75, 96))).numpy()
    return {"image": jpeg, "label": label}


def _image_size(rng, min_side, max_side):
    """Sizes distributed like cats_vs_dogs: most long sides at the maximum, aspect 1 to 1.8."""
    long_side = max_side if rng.uniform() < 0.6 else int(rng.integers(int(0.6 * max_side), max_side + 1))
    short_side = int(rng.integers(max(min_side, int(0.55 * long_side)), long_side + 1))
    return (long_side, short_side) if rng.uniform() < 0.3 else (short_side, long_side)
