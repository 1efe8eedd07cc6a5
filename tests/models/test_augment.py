"""Augmentation layers: parsing, and changing images in training only, in either placement."""

import numpy as np
import pytest
import tensorflow as tf

from tfpipe.data import pipeline
from tfpipe.errors import TfpipeError
from tfpipe.models import augment, backbones
from tfpipe.models import classifier as model_lib

ALL = "flip,rotation=0.2,zoom=0.1,contrast=0.2,translation=0.1,brightness=0.2"


def _images(count=4, size=32):
    return np.random.default_rng(0).integers(0, 255, (count, size, size, 3), dtype=np.uint8)


def test_default_is_the_tutorials_flip_and_rotation():
    assert augment.parse(augment.DEFAULT_AUGMENT) == (("flip", "horizontal"), ("rotation", "0.2"))
    layers = augment.build(augment.parse(augment.DEFAULT_AUGMENT)).layers
    assert [type(layer).__name__ for layer in layers] == ["RandomFlip", "RandomRotation"]


def test_every_kind_builds_and_none_turns_it_off():
    names = [type(layer).__name__ for layer in augment.build(augment.parse(ALL)).layers]
    assert names == [
        "RandomFlip",
        "RandomRotation",
        "RandomZoom",
        "RandomContrast",
        "RandomTranslation",
        "RandomBrightness",
    ]
    assert augment.parse("none") == () and augment.build(()) is None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("blur=2", "unknown augmentation 'blur'"),
        ("rotation=fast", "needs a number"),
        ("zoom=3", "out of range"),
        ("flip=diagonal", "not a flip mode"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(TfpipeError, match=message):
        augment.parse(spec)


def test_bad_placement():
    with pytest.raises(TfpipeError, match="--augment_on='gpu'"):
        augment.check_placement("gpu")


@pytest.mark.parametrize("spec", ALL.split(","))
def test_each_layer_changes_images_in_training_only(spec):
    layer = augment.build(augment.parse(spec), seed=1)
    images = tf.cast(_images(), tf.float32)
    assert not np.allclose(layer(images, training=True), images)
    np.testing.assert_array_equal(layer(images, training=False), images)


def test_in_the_model_augmentation_is_active_only_in_training():
    backbone = backbones.get("mobilenet_v2")
    base = backbone.build_base(32, None, alpha=0.35)
    aug = augment.build(augment.parse("flip,rotation=0.3"), seed=2)
    classifier = model_lib.build_classifier(backbone, base, 32, 2, dropout=0.0, augmentation=aug)
    images = _images()
    inference = [classifier(images, training=False).numpy() for _ in range(2)]
    np.testing.assert_array_equal(inference[0], inference[1])
    # Inside the model the augmented images feed the base; compare at the augmentation's output.
    probe = tf.keras.Model(classifier.input, classifier.get_layer("augmentation").output)
    float_images = images.astype(np.float32)
    assert not np.allclose(probe(images, training=True), float_images)
    np.testing.assert_array_equal(probe(images, training=False), float_images)


def test_in_the_pipeline_augmentation_touches_training_batches_only(tiny_source):
    config = pipeline.PipelineConfig(image_size=32, batch_size=8, seed=5, shuffle_buffer=1)
    aug = augment.build(augment.parse("flip,rotation=0.3"), seed=2)
    plain = next(iter(pipeline.build(tiny_source, "train[:16]", config, training=True)))[0].numpy()
    augmented_ds = pipeline.build(tiny_source, "train[:16]", config, training=True, augmentation=aug)
    augmented = next(iter(augmented_ds))[0]
    assert augmented.dtype == tf.uint8 and augmented.shape == plain.shape
    assert not np.array_equal(augmented.numpy(), plain)
    evaluation = pipeline.build(tiny_source, "train[:16]", config, training=False, augmentation=aug)
    reference = pipeline.build(tiny_source, "train[:16]", config, training=False)
    np.testing.assert_array_equal(next(iter(evaluation))[0], next(iter(reference))[0])


def test_pipeline_augmentation_differs_between_epochs(tiny_source):
    config = pipeline.PipelineConfig(image_size=32, batch_size=8, seed=5, shuffle_buffer=1)
    aug = augment.build(augment.parse("rotation=0.3"), seed=2)
    dataset = pipeline.build(tiny_source, "train[:8]", config, training=True, augmentation=aug)
    first, second = (next(iter(dataset))[0].numpy() for _ in range(2))
    assert not np.array_equal(first, second)


def test_augmentation_in_the_pipeline_is_refused_with_the_data_service_before_any_work(tmp_path):
    from tfpipe.training.config import TrainConfig

    config = TrainConfig(model_dir=str(tmp_path), augment_on="pipeline", data_service="grpc://localhost:5050")
    with pytest.raises(TfpipeError, match="--augment_on=pipeline cannot run on the tf.data service"):
        config.validate()
    TrainConfig(model_dir=str(tmp_path), augment_on="model", data_service="grpc://localhost:5050").validate()
