"""tfpipe_fractals: a real tfds builder of formula-drawn pretraining images."""

import tempfile

import numpy as np
import tensorflow_datasets as tfds

from tfpipe.data.builders import PRETRAINING_DATASET, TfpipeFractals, fractals, ifs
from tfpipe.data.builders.drawing import SHAPE_NAMES


class TinyConfigTest(tfds.testing.DatasetBuilderTestCase):
    """tfds' declarative builder test: registration, info, preparation and the split's size."""

    DATASET_CLASS = TfpipeFractals
    BUILDER_CONFIG_NAMES_TO_TEST = ["tiny"]
    SPLITS = {"train": 40}
    SKIP_CHECKSUMS = True
    EXAMPLE_DIR = tempfile.mkdtemp()  # nothing to download, so no dummy data


def _config(name):
    return next(c for c in TfpipeFractals.BUILDER_CONFIGS if c.name == name)


def test_registered_and_the_default_config_is_the_pretraining_one():
    assert PRETRAINING_DATASET in tfds.list_builders()
    config = TfpipeFractals.BUILDER_CONFIGS[0]
    assert config.name == "pretrain" and config.num_classes >= 50 and config.image_size == 64


def test_its_classes_are_not_the_downstream_tasks():
    names = fractals.class_names(_config("pretrain").num_classes)
    assert not set(names) & set(SHAPE_NAMES)


def test_examples_are_deterministic_and_labels_balanced():
    config = _config("tiny")
    first = fractals.render_example(config, 5)
    assert fractals.render_example(config, 5)["image"] == first["image"]
    assert fractals.render_example(config, 9)["image"] != first["image"]
    labels = [fractals.render_example(config, i)["label"] for i in range(40)]
    assert np.bincount(labels).tolist() == [10] * 4


def test_a_class_is_one_system_and_classes_differ():
    a = fractals.class_system(0, 1)
    assert np.array_equal(a[0], fractals.class_system(0, 1)[0])
    assert not np.array_equal(a[0][:1], fractals.class_system(0, 2)[0][:1])


def test_systems_contract_and_their_attractors_fill_a_shape():
    rng = np.random.default_rng(7)
    for _ in range(5):
        maps, probabilities = ifs.sample_system(rng)
        assert 2 <= len(maps) <= 4 and np.isclose(probabilities.sum(), 1.0)
        assert np.all(np.linalg.svd(maps[:, :, :2], compute_uv=False) < 1.0)  # every map contracts
        points, placed_by = ifs.chaos_game(rng, maps, probabilities)
        assert np.all(np.isfinite(points)) and set(placed_by) <= set(range(len(maps)))


def test_instances_of_one_class_vary_in_pose_and_colour():
    maps, probabilities = fractals.class_system(0, 0)
    a = ifs.draw_instance(np.random.default_rng(1), maps, probabilities, 48)
    b = ifs.draw_instance(np.random.default_rng(2), maps, probabilities, 48)
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
