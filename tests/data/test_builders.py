"""The embedded dataset: a real tfds builder, deterministic, JPEG, classes in the shapes."""

import tempfile

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfpipe.data.builders import EMBEDDED_DATASET, TfpipeShapes
from tfpipe.data.builders.drawing import SHAPE_NAMES, draw_scene
from tfpipe.data.builders.shapes import render_example


class TinyConfigsTest(tfds.testing.DatasetBuilderTestCase):
    """tfds' declarative builder test: registration, info, preparation and the split's size."""

    DATASET_CLASS = TfpipeShapes
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny", "tiny_multiclass"]
    SPLITS = {"train": 40}
    SKIP_CHECKSUMS = True
    EXAMPLE_DIR = tempfile.mkdtemp()  # nothing to download, so no dummy data


def _config(name):
    return next(c for c in TfpipeShapes.BUILDER_CONFIGS if c.name == name)


def test_is_registered_with_tfds_and_the_default_config_is_small():
    assert EMBEDDED_DATASET in tfds.list_builders()
    assert TfpipeShapes.BUILDER_CONFIGS[0].name == "small"


def test_configs_cover_short_cpu_runs_and_benchmarks():
    assert 200 <= _config("small").num_images <= 1000
    assert _config("large").num_images >= 5000
    for name in ("small", "large"):
        assert (_config(name).min_side, _config(name).max_side) == (200, 500)
        assert _config(name).num_classes == 2
    assert _config("multiclass").num_classes == 5


def test_prepared_split_is_one_train_split_of_jpegs(data_dir):
    builder = tfds.builder("tfpipe_shapes/tiny", data_dir=data_dir)
    assert list(builder.info.splits) == ["train"]
    assert builder.info.splits["train"].num_examples == 40
    assert builder.info.features["label"].names == ["ellipse", "rectangle"]
    raw = builder.as_dataset("train", decoders={"image": tfds.decode.SkipDecoding()})
    for example in raw.take(5):
        assert example["image"].numpy()[:3] == b"\xff\xd8\xff"


def test_examples_are_deterministic_and_sized_like_cats_vs_dogs():
    config = _config("large")
    first = render_example(config, 7)
    assert render_example(config, 7)["image"] == first["image"]
    assert render_example(config, 8)["image"] != first["image"]
    sides = []
    for index in range(12):
        shape = tf.io.extract_jpeg_shape(render_example(config, index)["image"]).numpy()
        sides.extend(shape[:2])
    assert 200 <= min(sides) and max(sides) <= 500
    assert len(set(sides)) > 3  # varied sizes


def test_classes_are_balanced():
    labels = [render_example(_config("tiny_multiclass"), i)["label"] for i in range(40)]
    assert np.bincount(labels).tolist() == [8] * 5


def test_the_class_is_not_in_a_global_colour():
    """Mean colour, a one-number summary of an image, must not tell the classes apart."""
    rng = np.random.default_rng(0)
    means = {shape: [] for shape in SHAPE_NAMES[:2]}
    for i in range(60):
        shape = SHAPE_NAMES[i % 2]
        means[shape].append(draw_scene(rng, shape, 96, 96).mean(axis=(0, 1)))
    ellipse, rectangle = (np.array(v) for v in means.values())
    # The gap between class averages is small next to the spread inside a class.
    gap = np.abs(ellipse.mean(0) - rectangle.mean(0))
    spread = np.concatenate([ellipse, rectangle]).std(0)
    assert np.all(gap < 0.5 * spread)


def test_scenes_differ_between_shapes_drawn_from_the_same_seed():
    a = draw_scene(np.random.default_rng(3), "ellipse", 64, 80)
    b = draw_scene(np.random.default_rng(3), "rectangle", 64, 80)
    assert a.shape == (64, 80, 3) and a.dtype == np.uint8
    assert not np.array_equal(a, b)
