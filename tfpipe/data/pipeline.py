"""tfpipe's input pipeline: encoded images -> batches of uint8 images and labels.

    read -> decode + resize (parallel, uint8) -> cache -> [oversample] -> shuffle
         -> batch -> [augment, only when placed in the pipeline] -> [class weights] -> prefetch

With the memory cache (the default), the cache is an ArrayCache: the images sit
in one array, the shuffle and batch stages work on their indices, and each batch
is gathered from the array with one copy right after batch().

Why this order:
- Decoding and resizing are the only deterministic per-image work; everything
  after the cache is cheap, so a cached epoch costs a memory copy per image.
- The cache holds resized uint8 images: 4x smaller than the tutorial's float32,
  and scaling to the backbone's range happens in the model, on the accelerator.
- Shuffle comes after the cache and before batch, and reshuffles every epoch, so
  every epoch sees new batches. (Caching after batch() would freeze the batches:
  fast, and wrong.)
- Oversampling (balance.py) repeats cached examples, so the cache holds each
  image once; it comes before the shuffle, which spreads the copies apart.
- drop_remainder on training batches keeps shapes static for the compiled step.
- Prefetch is last so the consumer never waits for the stages before it.
  Its depth is fixed (PREFETCH_BATCHES) rather than autotuned, for a steady peak memory.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os

import tensorflow as tf
from absl import logging

from tfpipe.data import file_index
from tfpipe.data.array_cache import ArrayCache
from tfpipe.errors import TfpipeError
from tfpipe.paths import ensure_writable_dir

CACHE_MEMORY = "memory"
CACHE_NONE = "none"
# libjpeg can decode at 1/2, 1/4 or 1/8 scale, skipping most of the inverse DCT.
_JPEG_SCALES = (1, 2, 4, 8)
_JPEG_MAGIC = b"\xff\xd8\xff"
# Batches ready ahead of the consumer. Two absorb a slow step; deeper buffers add
# no throughput in steady state, and tf.data's autotuned depth sometimes grew by
# tens of batches mid-run (BUILD_NOTES.md), each a batch of images of memory.
PREFETCH_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # None: the backbone's own size (backbones.Backbone.native_size), filled in by the run that
    # knows its backbone (TrainConfig.resolved); a pipeline is only built at a known size.
    image_size: int | None = None
    batch_size: int = 32
    cache: str = CACHE_MEMORY  # "memory", "none" or a folder for tf.data's file cache
    shuffle_buffer: int = 1000  # 0: the whole split
    seed: int | None = None
    jpeg_dct_scaling: bool = True

    def __post_init__(self):
        if self.image_size is not None and self.image_size <= 0:
            raise TfpipeError(f"--image_size={self.image_size} must be a positive number of pixels, e.g. 224")
        if self.batch_size <= 0:
            raise TfpipeError(f"--batch_size={self.batch_size} must be a positive number of images, e.g. 32")
        if self.shuffle_buffer < 0:
            raise TfpipeError(f"--shuffle_buffer={self.shuffle_buffer} must be 0 (whole split) or positive")
        if not self.cache:
            raise TfpipeError("--cache must be 'memory', 'none' or a folder path")

    def sized(self, default_size: int) -> PipelineConfig:
        """This config at its own image size, or at `default_size` when it has none."""
        return self if self.image_size is not None else dataclasses.replace(self, image_size=default_size)

    def check_cache_folder(self) -> None:
        """A file cache's folder is created and writable now, before long work; TfpipeError if not."""
        if self.cache not in (CACHE_MEMORY, CACHE_NONE):
            ensure_writable_dir(self.cache, flag="cache")


def decode_and_resize(encoded: tf.Tensor, image_size: int, jpeg_dct_scaling: bool = True) -> tf.Tensor:
    """One encoded image -> (image_size, image_size, 3) uint8, stretched like the tutorial's resize.

    With jpeg_dct_scaling, a JPEG at least twice the target size on both sides is
    decoded directly at 1/2, 1/4 or 1/8 scale (PIL calls this draft mode), never
    below the target size; the bilinear resize then has less to do and aliases less.
    """
    if jpeg_dct_scaling:
        image = tf.cond(
            tf.strings.substr(encoded, 0, 3) == _JPEG_MAGIC,
            lambda: _decode_jpeg_near(encoded, image_size),
            lambda: file_index.decode_image(encoded),
        )
    else:
        image = file_index.decode_image(encoded)
    image.set_shape([None, None, 3])
    # TensorFlow's bilinear kernel is vectorized for float32 input only: casting
    # first makes the resize cheaper than resizing uint8 directly.
    resized = tf.image.resize(tf.cast(image, tf.float32), [image_size, image_size], method="bilinear")
    # Bilinear values are convex combinations of uint8 pixels: no clipping needed.
    return tf.cast(tf.round(resized), tf.uint8)


def _decode_jpeg_near(encoded, image_size):
    shape = tf.io.extract_jpeg_shape(encoded)
    shorter = tf.minimum(shape[0], shape[1])
    # Index of the largest scale that keeps the shorter side >= image_size.
    scale_index = tf.add_n([tf.cast(shorter >= image_size * s, tf.int32) for s in _JPEG_SCALES[1:]])
    return tf.switch_case(
        scale_index,
        [lambda s=s: tf.io.decode_jpeg(encoded, channels=3, ratio=s) for s in _JPEG_SCALES],
    )


def build(
    source,
    split: str,
    config: PipelineConfig,
    *,
    training: bool,
    augmentation=None,
    shard: tuple[int, int] | None = None,
    epoch_offset: int = 0,
    max_examples: int | None = None,
    service=None,
    balance=None,
) -> tf.data.Dataset:
    """Batches of (uint8 images [B, S, S, 3], int64 labels [B]) from `split` of `source`.

    training: shuffle (reshuffled every epoch) and drop the last partial batch.
    augmentation: a Keras layer applied to each training batch inside the
      pipeline; leave None when augmentation runs in the model.
    shard: (num_shards, index) for one of several input pipelines
      (tf.distribute); each decodes and caches only its own share.
    epoch_offset: the first epoch this dataset serves (a resumed run), so a
      seeded run does not replay the first epoch's order after a restart.
    max_examples: use only the first examples of the split (a bounded benchmark);
      the cache then holds exactly them.
    service: a tfpipe.data.service.DataService: everything before prefetch runs
      on its workers, without a cache (it would not outlive the epoch there).
    balance: a tfpipe.data.balance.ClassBalance for training batches: oversampled
      and/or weighted (images, labels, sample weights).
    """
    dataset = source.encoded(split, whole=service is None or not service.dynamic)
    if shard is not None:
        dataset = dataset.shard(*shard)
    if max_examples is not None:
        dataset = dataset.take(max_examples)
    size = config.image_size
    if size is None:
        raise ValueError("PipelineConfig.image_size is None: size the config first (PipelineConfig.sized)")
    dataset = dataset.map(
        lambda encoded, label: (decode_and_resize(encoded, size, config.jpeg_dct_scaling), label),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    examples = _split_size(source, split, shard, max_examples)
    array_cache = None
    if service is None and config.cache == CACHE_MEMORY:
        array_cache = ArrayCache(dataset.element_spec, capacity=examples)
        dataset = array_cache.indices(dataset)
    elif service is None:
        dataset = _file_cache(dataset, config, source.name, split, shard, max_examples)
    balance = balance if training else None
    if balance is not None:
        if array_cache is not None:  # elements are indices: read the cached label, not the image too
            label_of = lambda index: array_cache.gather_component(index, 1)  # noqa: E731
        else:
            label_of = lambda example: example[1]  # noqa: E731
        whole = shard is None and service is None and max_examples is None
        dataset = balance.oversample(dataset, label_of, exact=whole)
        examples = balance.epoch_examples(examples)
    if training:
        seed = None if config.seed is None else config.seed + epoch_offset
        dataset = dataset.shuffle(config.shuffle_buffer or examples, seed=seed, reshuffle_each_iteration=True)
    # A plain batch(): copying uint8 images is cheap, and a parallel batch's extra
    # buffers cost memory for no speed on the benchmark machine.
    dataset = dataset.batch(config.batch_size, drop_remainder=training)
    if array_cache is not None:
        dataset = dataset.map(array_cache.gather, num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation is not None:
        dataset = dataset.map(
            lambda images, labels: (augment_to_uint8(augmentation, images), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    if balance is not None:
        dataset = balance.add_weights(dataset)
    if service is not None:
        dataset = service.distribute(dataset)
    return dataset.prefetch(PREFETCH_BATCHES).with_options(pipeline_options(config.seed))


def augment_to_uint8(augmentation, images: tf.Tensor) -> tf.Tensor:
    """Runs Keras augmentation layers on a uint8 batch and returns uint8 again.

    Keeping the pipeline's output uint8 whatever the placement means the model
    has one input signature, and the exported model serves plain uint8 images.
    """
    augmented = augmentation(tf.cast(images, tf.float32), training=True)
    return tf.saturate_cast(tf.round(augmented), tf.uint8)


def pipeline_options(seed: int | None) -> tf.data.Options:
    options = tf.data.Options()
    # A seeded run must give the same order every time; an unseeded one lets
    # parallel stages hand out elements as they finish.
    options.deterministic = seed is not None
    options.autotune.enabled = True
    # Parallelism comes from tf.data's own thread pool; ops inside a map using
    # intra-op threads too would oversubscribe the cores (tf.data guide).
    options.threading.max_intra_op_parallelism = 1
    return options


def _split_size(source, split, shard, max_examples) -> int:
    """Examples this pipeline reads (rounded up for a shard): the whole-split
    shuffle buffer and the memory cache's capacity."""
    count = source.count(split)
    if max_examples is not None:
        count = min(count, max_examples)
    if shard is not None:
        count = -(-count // shard[0])
    return max(count, 1)


def _file_cache(dataset, config, source_name, split, shard, max_examples):
    if config.cache == CACHE_NONE:
        return dataset
    return dataset.cache(cache_file_prefix(config, source_name, split, shard, max_examples))


def cache_file_prefix(config: PipelineConfig, source_name: str, split: str, shard=None, max_examples=None) -> str:
    """A file prefix in the cache folder, distinct for every input that changes its contents."""
    folder_path = ensure_writable_dir(config.cache, flag="cache")
    key = repr((source_name, split, config.image_size, config.jpeg_dct_scaling, shard, max_examples))
    readable = "".join(c if c.isalnum() else "_" for c in f"{source_name}_{split}")[-60:]
    prefix = os.path.join(
        folder_path, f"{readable}_{config.image_size}px_{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    )
    _remove_stale_lock(prefix)
    return prefix


def _remove_stale_lock(prefix: str) -> None:
    """A run killed while writing a file cache leaves a lockfile that makes every
    later run fail; tfpipe owns its cache folder, so a lock without a finished
    cache is stale."""
    complete = os.path.exists(f"{prefix}.index")
    for lock in glob.glob(f"{glob.escape(prefix)}*.lockfile"):
        if not complete:
            logging.warning("Removing a stale cache lock left by an interrupted run: %s", lock)
            os.remove(lock)
