"""The input pipeline: each stage eagerly and in tf.data, caching, shuffling, seeds."""

import os

import numpy as np
import pytest
import tensorflow as tf
from helpers.images import write_image
from helpers.runs import fingerprints

from tfpipe.bench import pipelines as bench
from tfpipe.data import pipeline
from tfpipe.errors import TfpipeError

SPLIT = "train[:80%]"  # 32 images of the tiny config


def _config(**overrides):
    return pipeline.PipelineConfig(**{"image_size": 32, "batch_size": 8, "seed": 3, **overrides})


def _jpeg(height, width, seed=0):
    rng = np.random.default_rng(seed)
    # Smooth content, so decoding at a reduced scale is a fair comparison.
    base = rng.integers(0, 255, (height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
    image = tf.image.resize(base, (height, width), method="bilinear")
    return tf.io.encode_jpeg(tf.cast(image, tf.uint8), quality=95)


@pytest.mark.parametrize("shape", [(300, 400), (90, 50), (1400, 700)])
def test_decode_and_resize_eagerly_and_in_tf_data_agree(shape):
    encoded = _jpeg(*shape)
    eager = pipeline.decode_and_resize(encoded, 64)
    in_graph = next(iter(tf.data.Dataset.from_tensors(encoded).map(lambda e: pipeline.decode_and_resize(e, 64))))
    assert eager.dtype == tf.uint8 and eager.shape == (64, 64, 3)
    np.testing.assert_array_equal(eager.numpy(), in_graph.numpy())


def test_dct_scaled_decoding_is_close_to_full_decoding():
    encoded = _jpeg(520, 660)  # shorter side >= 2 x 160: decoded at half scale
    scaled = pipeline.decode_and_resize(encoded, 160, jpeg_dct_scaling=True).numpy().astype(float)
    full = pipeline.decode_and_resize(encoded, 160, jpeg_dct_scaling=False).numpy().astype(float)
    assert np.abs(scaled - full).mean() < 3.0


def test_png_gif_and_bmp_decode_through_the_same_stage(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    for fmt in ("png", "gif", "bmp"):
        path = str(tmp_path / f"image.{fmt}")
        write_image(path, pixels, fmt)
        image = pipeline.decode_and_resize(tf.io.read_file(path), 16)
        assert image.shape == (16, 16, 3) and image.dtype == tf.uint8


def test_training_batches_are_uint8_static_and_drop_the_remainder(tiny_source):
    dataset = pipeline.build(tiny_source, "train[:30]", _config(), training=True)
    assert dataset.element_spec[0] == tf.TensorSpec((8, 32, 32, 3), tf.uint8)
    assert dataset.element_spec[1] == tf.TensorSpec((8,), tf.int64)
    assert sum(int(labels.shape[0]) for _, labels in dataset) == 24


def test_evaluation_batches_keep_every_example_in_order(tiny_source):
    dataset = pipeline.build(tiny_source, "train[:30]", _config(), training=False)
    sizes = [int(labels.shape[0]) for _, labels in dataset]
    assert sizes == [8, 8, 8, 6]
    assert bench.batch_fingerprints(dataset, 4) == bench.batch_fingerprints(dataset, 4)


@pytest.mark.parametrize("cache", ["memory", "store", "none", "auto"])
def test_cached_contents_are_stable_while_the_order_changes(tiny_source, tmp_path, cache):
    config = _config(cache=str(tmp_path / "cache") if cache == "store" else cache)
    dataset = pipeline.build(tiny_source, SPLIT, config, training=True)
    first, second = fingerprints(dataset), fingerprints(dataset)
    assert sorted(first) == sorted(second)  # the same 32 images each epoch
    assert first != second  # in a new order
    if cache == "store":
        (folder,) = os.listdir(tmp_path / "cache")
        assert "manifest.json" in os.listdir(tmp_path / "cache" / folder)


def test_without_a_cache_the_shuffle_buffer_bounds_how_far_an_image_moves_forward(tiny_source):
    """With a buffer of b, output i is drawn from source images [0, i + b): none moves up b or more.
    (A cache shuffles its indices over the whole split instead: data.order.)"""
    in_order = fingerprints(pipeline.build(tiny_source, SPLIT, _config(cache="none"), training=False))
    source_index = {image: i for i, image in enumerate(in_order)}

    def furthest_move_forward(buffer):
        config = _config(shuffle_buffer=buffer, cache="none")
        epoch = fingerprints(pipeline.build(tiny_source, SPLIT, config, training=True))
        assert sorted(epoch) == sorted(in_order)
        return max(source_index[image] - position for position, image in enumerate(epoch))

    assert furthest_move_forward(1) == 0  # a buffer of one does not shuffle
    assert 0 < furthest_move_forward(4) <= 3
    assert furthest_move_forward(0) > 8  # 0: the whole split, so images move far


def test_the_same_seed_gives_the_same_order(tiny_source):
    orders = []
    for _ in range(2):
        dataset = pipeline.build(tiny_source, SPLIT, _config(seed=11), training=True)
        orders.append((fingerprints(dataset), fingerprints(dataset)))
    assert orders[0] == orders[1]
    other = pipeline.build(tiny_source, SPLIT, _config(seed=12), training=True)
    assert fingerprints(other) != orders[0][0]


def test_a_resumed_run_does_not_replay_the_first_epochs_order(tiny_source):
    fresh = pipeline.build(tiny_source, SPLIT, _config(seed=11), training=True)
    resumed = pipeline.build(tiny_source, SPLIT, _config(seed=11), training=True, epoch_offset=4)
    assert fingerprints(fresh) != fingerprints(resumed)


def test_caching_after_batch_freezes_batches_and_the_check_sees_it(tiny_source):
    frozen = pipeline.build(tiny_source, SPLIT, _config(cache="none"), training=True).cache()
    assert not bench.epochs_reshuffled(frozen)
    assert bench.epochs_reshuffled(pipeline.build(tiny_source, SPLIT, _config(), training=True))


def _classic_image_sums(source, mode):
    sums = []
    for images, labels in bench.classic_pipeline(source, SPLIT, 32, 8, mode=mode):
        assert images.dtype == tf.float32 and images.shape[1:] == (32, 32, 3) and labels.shape[0] <= 8
        assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
        sums.extend(tf.reduce_sum(images, axis=[1, 2, 3]).numpy())
    return np.sort(sums)


def test_the_classic_baselines_differ_only_in_parallelism(tiny_source):
    serial = _classic_image_sums(tiny_source, bench.CLASSIC_SERIAL)
    parallel = _classic_image_sums(tiny_source, bench.CLASSIC_TF_DEFAULTS)
    assert len(serial) == 32
    np.testing.assert_allclose(serial, parallel, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown classic mode"):
        bench.classic_pipeline(tiny_source, SPLIT, 32, 8, mode="threaded")


def test_max_examples_bounds_the_split(tiny_source):
    dataset = pipeline.build(tiny_source, SPLIT, _config(), training=False, max_examples=10)
    assert sum(int(labels.shape[0]) for _, labels in dataset) == 10


def test_sharded_pipelines_split_the_examples(tiny_source):
    parts = [
        fingerprints(pipeline.build(tiny_source, SPLIT, _config(), training=False, shard=(2, i))) for i in range(2)
    ]
    assert len(parts[0]) == len(parts[1]) == 16
    assert not set(parts[0]) & set(parts[1])


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"image_size": 0}, "--image_size=0 must be a positive"),
        ({"image_size": -5}, "--image_size=-5"),
        ({"batch_size": 0}, "--batch_size=0 must be a positive"),
        ({"shuffle_buffer": -1}, "--shuffle_buffer=-1"),
    ],
)
def test_bad_sizes_are_clear_errors(overrides, message):
    with pytest.raises(TfpipeError, match=message):
        _config(**overrides)


def test_unwritable_cache_path(tiny_source, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TfpipeError, match="--cache=.* is not a writable folder"):
        pipeline.build(tiny_source, SPLIT, _config(cache=str(blocker / "cache")), training=True)


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_an_epochs_order_is_a_function_of_the_seed_and_the_epoch_and_can_start_at_any_step(tiny_source, cache):
    config = _config(seed=5, cache=cache)
    made = pipeline.Pipeline(tiny_source, SPLIT, config)
    epoch_2 = fingerprints(made.batches(training=True, epoch=2))
    assert fingerprints(pipeline.Pipeline(tiny_source, SPLIT, config).batches(training=True, epoch=2)) == epoch_2
    assert sorted(epoch_2) == sorted(fingerprints(made.batches(training=True, epoch=3))) != []
    assert epoch_2 != fingerprints(made.batches(training=True, epoch=3))
    # From step 3 of 4: the last batch of the same epoch, nothing else.
    assert fingerprints(made.batches(training=True, epoch=2, start_step=3)) == epoch_2[24:]
    # Epochs 1-3 in one stream, epoch 1 from step 2: the same batches as each epoch alone.
    stream = fingerprints(made.epochs(1, 4, start_step=2))
    whole = [fingerprints(made.batches(training=True, epoch=e)) for e in (1, 2, 3)]
    assert stream == whole[0][16:] + whole[1] + whole[2]
