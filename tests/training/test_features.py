"""Fast feature extraction's two halves, directly: extract() and feature_datasets()."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfpipe.models import backbones
from tfpipe.models import classifier as model_lib
from tfpipe.training import features


def _classifier():
    keras.utils.set_random_seed(0)
    spec = backbones.get("mobilenet_v2")
    return model_lib.build_classifier(spec, spec.build_base(32, None, alpha=0.35), 32, 2)


def test_extract_gives_every_examples_pooled_features_in_order():
    classifier = _classifier()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (10, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(10) % 2
    batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)  # a partial last batch
    ((x, y),) = features.extract(classifier, [batches], [10])
    assert x.shape == (10, classifier.get_layer(model_lib.POOLING_LAYER).output.shape[-1]) and x.dtype == np.float32
    np.testing.assert_array_equal(y, labels)
    expected = model_lib.feature_extractor(classifier)(images, training=False)
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)


def test_training_features_are_in_each_epochs_own_order_and_evaluation_ones_in_theirs():
    x = np.arange(20, dtype=np.float32)[:, None]
    y = np.arange(20) % 2

    def epoch(number, start_step=0):
        training = features.feature_datasets(x, y, 8, training=True, seed=1, epoch=number, start_step=start_step)
        return np.concatenate([batch.numpy()[:, 0] for batch, _ in training])

    epochs = [epoch(0), epoch(1)]
    assert all(len(e) == 16 and len(set(e)) == 16 for e in epochs)  # two full batches: the remainder dropped
    assert not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epoch(1), epochs[1])  # a function of (seed, epoch)
    np.testing.assert_array_equal(epoch(1, start_step=1), epochs[1][8:])
    evaluation = features.feature_datasets(x, y, 8, training=False, seed=1)
    np.testing.assert_array_equal(np.concatenate([b.numpy()[:, 0] for b, _ in evaluation]), x[:, 0])


def test_extract_refuses_a_dataset_that_gives_another_count_than_its_source():
    classifier = _classifier()
    images = np.zeros((6, 32, 32, 3), np.uint8)
    batches = tf.data.Dataset.from_tensor_slices((images, np.zeros(6, np.int64))).batch(4)
    with pytest.raises(ValueError, match="more than the 5 examples"):
        features.extract(classifier, [batches], [5])
    with pytest.raises(ValueError, match="gave 6 examples where its source counts 7"):
        features.extract(classifier, [batches], [7])


def test_stored_activations_of_several_tensors_come_back_as_a_tuple_per_batch():
    first, second = np.arange(10, dtype=np.float32)[:, None], np.arange(10, dtype=np.float32)[:, None, None] * -1
    labels = np.arange(10) % 2
    batches = list(features.feature_datasets((first, second), labels, 4, training=False, seed=None))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    for (a, b), y in batches:
        assert a.shape[1:] == (1,) and b.shape[1:] == (1, 1)
        np.testing.assert_array_equal(a.numpy()[:, 0], -b.numpy()[:, 0, 0])
        np.testing.assert_array_equal(y.numpy(), a.numpy()[:, 0].astype(int) % 2)
