"""tfpipe_fractals: formula-drawn pretraining images, a real tfds builder with no downloads.

Each class is one random iterated function system; its images are the system's
attractor under random pose, colours and background (tfpipe/data/builders/ifs.py).
Pretraining MobileNetV2 to tell the classes apart gives it edge, corner and
shape features without a natural image, a download or a borrowed weight, so
the embedded task can start from a pretrained base offline (bin/pretrain).
The classes share nothing with tfpipe_shapes' ellipses and rectangles.

    tfds.load("tfpipe_fractals")         # pretrain: 100 classes, 30,000 images of 64 px
    tfds.load("tfpipe_fractals/tiny")    # 4 classes, 40 images of 32 px, for tests
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfpipe.data.builders import ifs


@dataclasses.dataclass
class FractalsConfig(tfds.core.BuilderConfig):
    num_classes: int = 100
    images_per_class: int = 300
    image_size: int = 64
    seed: int = 0


class TfpipeFractals(tfds.core.GeneratorBasedBuilder):
    """Random IFS fractals as JPEGs: the class is the system that drew the picture."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        FractalsConfig(
            name="pretrain",
            description="100 classes x 300 images of 64 px: bin/pretrain's default, about an hour on 2 cores.",
        ),
        FractalsConfig(
            name="small",
            description="20 classes x 100 images of 64 px: a pretraining of minutes.",
            num_classes=20,
            images_per_class=100,
        ),
        FractalsConfig(
            name="tiny",
            description="4 classes x 10 images of 32 px: for tests.",
            num_classes=4,
            images_per_class=10,
            image_size=32,
        ),
    ]

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(
                        shape=(config.image_size, config.image_size, 3),
                        encoding_format="jpeg",
                    ),
                    "label": tfds.features.ClassLabel(names=class_names(config.num_classes)),
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
        for index in range(config.num_classes * config.images_per_class):
            yield index, render_example(config, index)


def class_names(num_classes: int) -> list[str]:
    return [f"ifs_{k:03d}" for k in range(num_classes)]


@functools.lru_cache(maxsize=None)
def class_system(seed: int, label: int) -> tuple[np.ndarray, np.ndarray]:
    """The IFS of class `label`: the same maps on every machine for a given seed."""
    return ifs.sample_system(np.random.default_rng([seed, label]))


def render_example(config: FractalsConfig, index: int) -> dict:
    """The example at `index`: the same bytes on every machine for a given config."""
    label = index % config.num_classes  # balanced classes; tfds shuffles the order on write
    maps, probabilities = class_system(config.seed, label)
    rng = np.random.default_rng([config.seed, label, index])
    pixels = ifs.draw_instance(rng, maps, probabilities, config.image_size)
    return {"image": tf.io.encode_jpeg(pixels, quality=90).numpy(), "label": label}
