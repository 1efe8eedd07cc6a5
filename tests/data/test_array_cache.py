"""The memory cache: filled on the first complete pass, served without reading the source after."""

import pytest
import tensorflow as tf

from tfpipe.data.array_cache import ArrayCache


def _counted_examples(count, reads):
    """(4x4x3 uint8 image filled with i, label i) for i < count; `reads` counts the examples read."""

    def example(i):
        with tf.control_dependencies([reads.assign_add(1)]):
            return tf.fill([4, 4, 3], tf.cast(i, tf.uint8)), i

    return tf.data.Dataset.range(count).map(example)


def _served(cache, indices):
    """Every example a pass serves, as (image value, label) pairs, in order."""
    pairs = []
    for batch in indices.batch(3):
        images, labels = cache.gather(batch)
        assert images.dtype == tf.uint8 and images.shape[1:] == (4, 4, 3)
        pairs += [(int(image[0, 0, 0]), int(label)) for image, label in zip(images.numpy(), labels.numpy())]
    return pairs


def test_later_passes_are_served_from_the_cache_without_reading_the_source():
    reads = tf.Variable(0, dtype=tf.int64)
    examples = _counted_examples(10, reads)
    cache = ArrayCache(examples.element_spec, capacity=10)
    indices = cache.indices(examples)
    expected = [(i, i) for i in range(10)]
    assert _served(cache, indices) == expected
    assert int(reads) == 10
    assert _served(cache, indices) == expected
    assert sorted(_served(cache, indices.shuffle(10))) == expected
    assert int(reads) == 10  # two more passes, no more reads


def test_a_pass_that_stops_early_leaves_the_cache_to_the_next_complete_pass():
    reads = tf.Variable(0, dtype=tf.int64)
    examples = _counted_examples(10, reads)
    cache = ArrayCache(examples.element_spec, capacity=10)
    indices = cache.indices(examples)
    assert len(_served(cache, indices.take(4))) == 4
    assert _served(cache, indices) == [(i, i) for i in range(10)]
    reads_after_fill = int(reads)
    assert _served(cache, indices) == [(i, i) for i in range(10)]
    assert int(reads) == reads_after_fill


def test_a_source_smaller_than_the_capacity_serves_what_it_gave():
    examples = _counted_examples(6, tf.Variable(0, dtype=tf.int64)).filter(lambda image, label: label % 2 == 0)
    cache = ArrayCache(examples.element_spec, capacity=6)
    indices = cache.indices(examples)
    assert int(indices.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    assert _served(cache, indices) == [(0, 0), (2, 2), (4, 4)]
    assert _served(cache, indices) == [(0, 0), (2, 2), (4, 4)]


def test_a_known_size_stays_known():
    examples = _counted_examples(7, tf.Variable(0, dtype=tf.int64))
    indices = ArrayCache(examples.element_spec, capacity=7).indices(examples)
    assert int(indices.cardinality()) == 7
    assert int(indices.batch(3).cardinality()) == 3


def test_more_examples_than_the_capacity_is_a_clear_error():
    examples = _counted_examples(5, tf.Variable(0, dtype=tf.int64))
    cache = ArrayCache(examples.element_spec, capacity=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="more examples than the 4 its metadata counts"):
        list(cache.indices(examples))


def test_examples_without_a_fixed_shape_are_refused():
    ragged = tf.data.Dataset.range(3).map(lambda i: tf.zeros([i + 1], tf.uint8))
    with pytest.raises(ValueError, match="fixed shape"):
        ArrayCache(ragged.element_spec, capacity=3)
    examples = _counted_examples(3, tf.Variable(0, dtype=tf.int64))
    with pytest.raises(ValueError, match="the cache holds"):
        ArrayCache(examples.element_spec, capacity=3).indices(examples.map(lambda image, label: image))


def test_a_cache_made_inside_a_strategy_scope_stays_one_host_array():
    # A dataset_fn usually runs under the strategy's scope, where tf.Variable
    # would make per-replica copies that the pipeline cannot write.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])

    def dataset_fn(context):
        examples = _counted_examples(6, tf.Variable(0, dtype=tf.int64))
        cache = ArrayCache(examples.element_spec, capacity=6)
        return cache.indices(examples).batch(3).map(cache.gather)

    with strategy.scope():
        dataset = strategy.distribute_datasets_from_function(dataset_fn)
    for _ in range(2):
        labels = [int(label) for _, labels in dataset for label in labels.numpy()]
        assert labels == list(range(6))
