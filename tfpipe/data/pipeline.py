"""tfpipe's input pipeline: encoded images -> batches of uint8 images and labels.

    read -> decode + resize (parallel, uint8) -> cache -> [oversample] -> shuffle
         -> batch -> [augment, only when placed in the pipeline] -> [class weights] -> prefetch

The cache (--cache) holds each image decoded and resized, once:
  memory  an ArrayCache: the split in one array in memory;
  DIR     a decoded store on disk (data/store.py), written once, read by every later
          epoch and run on the same data;
  auto    (the default) memory when the split fits the memory budget (tfpipe.memory),
          otherwise the store under DATA_DIR/tfpipe_store (choose_cache);
  none    decode every epoch.
With a cache, which is filled in one pass before the first batch, an epoch is a permutation
of indices drawn from (seed, epoch) (data.order), batched, and each batch is gathered from
the cache with one copy. Without one, the encoded images are shuffled in a buffer
(--shuffle_buffer) seeded by (seed, epoch), then decoded.

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
from typing import Callable

import tensorflow as tf
from absl import logging

from tfpipe import memory
from tfpipe.data import order, sources, store
from tfpipe.data.array_cache import ArrayCache
from tfpipe.data.preprocessing import RESIZE_METHOD, Preprocessing, decode_and_resize  # noqa: F401 (re-exported)
from tfpipe.errors import TfpipeError
from tfpipe.paths import ensure_writable_dir

CACHE_AUTO = "auto"
CACHE_MEMORY = "memory"
CACHE_NONE = "none"
CACHE_CHOICES = (CACHE_AUTO, CACHE_MEMORY, CACHE_NONE)
# The memory cache's peak RSS over the bytes it holds: 1.07x-1.16x measured over 17 runs
# (BUILD_NOTES.md, "The memory cache is one array per split"), rounded up.
MEMORY_CACHE_PEAK = 1.2
# Batches ready ahead of the consumer. Two absorb a slow step; deeper buffers add
# no throughput in steady state, and tf.data's autotuned depth sometimes grew by
# tens of batches mid-run (BUILD_NOTES.md, "Prefetch depth 2"), each a batch of images of memory.
PREFETCH_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # None: the backbone's own size (backbones.Backbone.native_size), filled in by the run that
    # knows its backbone (TrainConfig.resolved); a pipeline is only built at a known size.
    image_size: int | None = None
    batch_size: int = 32
    cache: str = CACHE_AUTO  # "auto", "memory", "none" or a folder for the decoded store
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
            raise TfpipeError("--cache must be 'auto', 'memory', 'none' or a folder for the decoded store")

    @classmethod
    def reading(cls, preprocessing: Preprocessing, batch_size: int) -> PipelineConfig:
        """A pipeline that decodes as a trained model's run did, for one pass (evaluation, calibration)."""
        return cls(preprocessing.image_size, batch_size, CACHE_NONE, jpeg_dct_scaling=preprocessing.jpeg_dct_scaling)

    def sized(self, default_size: int) -> PipelineConfig:
        """This config at its own image size, or at `default_size` when it has none."""
        return self if self.image_size is not None else dataclasses.replace(self, image_size=default_size)

    @property
    def image_bytes(self) -> int:
        """One decoded image's bytes at this size (uint8, 3 channels)."""
        return self.image_size * self.image_size * 3

    @property
    def preprocessing(self) -> Preprocessing:
        """What shapes the pixels the model sees: the run records it, and every reader of the run uses it."""
        return Preprocessing(self.image_size, self.jpeg_dct_scaling)

    @property
    def decode_options(self) -> str:
        """Everything besides the size that shapes the pixels a decoded image holds."""
        return self.preprocessing.decode_options
    def check_cache_folder(self) -> None:
        """A store's folder is created and writable now, before long work; TfpipeError if not."""
        if self.cache not in CACHE_CHOICES:
            ensure_writable_dir(self.cache, flag="cache")


def fits_in_memory(examples: int, image_bytes: int, budget: memory.MemoryBudget) -> bool:
    """Whether the memory cache of `examples` images fits `budget` at its peak."""
    return memory_cache_bytes(examples, image_bytes) <= budget.bytes


def memory_cache_bytes(examples: int, image_bytes: int) -> int:
    """The memory cache's peak for `examples` images and their int64 labels (ArrayCache)."""
    return int(MEMORY_CACHE_PEAK * examples * (image_bytes + 8))


def choose_cache(requested: str, examples: int, image_bytes: int, ledger: memory.Ledger, store_root: str):
    """(cache, line): where `examples` decoded images of `image_bytes` each are kept, from --cache and
    what is left of the memory budget, and a line saying which and why. Takes their bytes from the
    ledger when they go to memory. TfpipeError when --cache=memory cannot fit."""
    needed = memory_cache_bytes(examples, image_bytes)
    sizes = f"{examples} decoded images take {memory.format_size(needed)}"
    budget = f"{memory.format_size(ledger.left)} left of the memory budget"
    if requested == CACHE_NONE:
        return CACHE_NONE, "Cache: none (--cache=none): every epoch decodes every image"
    if requested not in (CACHE_AUTO, CACHE_MEMORY):
        return requested, f"Cache: a decoded store on disk in {requested} (--cache); {sizes}"
    if ledger.fits(needed):
        ledger.take("decoded images", needed)
        return CACHE_MEMORY, f"Cache: in memory (--cache={requested}): {sizes}, within the {budget}"
    if requested == CACHE_MEMORY:
        raise TfpipeError(
            f"--cache=memory: {sizes}, more than the {budget} ({ledger.budget.origin}); use --cache=auto (a decoded store on disk when "
            f"the data does not fit), --cache=DIR, a smaller --image_size, or a larger --{memory.FLAG}"
        )
    return store_root, f"Cache: a decoded store on disk in {store_root}: {sizes}, more than the {budget}"


class Pipeline:
    """One split of a source, decoded and resized, kept where config.cache says (filled now, in
    one pass), and batched for any epoch: batches(epoch=e) gives epoch e in its order, a function
    of (seed, e) alone (data.order), from any step.

    shard: (num_shards, index) for one of several input pipelines (tf.distribute); each
      decodes and caches only its own share.
    max_examples: use only the first examples of the split (a bounded benchmark); the cache
      then holds exactly them.
    service: a tfpipe.data.service.DataService: everything before prefetch runs on its
      workers, without a cache (it would not outlive the epoch there), reshuffled at each pass.
    seed: the order's seed; None: config.seed, or one drawn now (a run passes the seed it recorded).
    log: where the decoded store says what it writes or reads.
    """

    def __init__(
        self,
        source,
        split: str,
        config: PipelineConfig,
        *,
        shard: tuple[int, int] | None = None,
        max_examples: int | None = None,
        service=None,
        seed: int | None = None,
        log: Callable[[str], None] = logging.info,
    ):
        if config.image_size is None:
            raise ValueError("PipelineConfig.image_size is None: size the config first (PipelineConfig.sized)")
        self.config, self.service = config, service
        self.seed = seed if seed is not None else order.seed_or_draw(config.seed)
        encoded = source.encoded(split, whole=service is None or not service.dynamic)
        if shard is not None:
            encoded = encoded.shard(*shard)
        if max_examples is not None:
            encoded = encoded.take(max_examples)
        self._encoded = encoded
        self._whole = shard is None and service is None and max_examples is None  # the split, all of it
        self.count = _exact_count(source, split, shard, max_examples)
        # An ArrayCache or a DecodedStore, filled now: batches are then gathered by index.
        self.cache = None if service is not None else _cache(config, source, split, shard, max_examples, self, log)
        if self.cache is not None:
            self.count = self.cache.count

    def steps(self, balance=None) -> int:
        """Training batches of an epoch: the examples it serves (oversampling repeats some), less the
        last partial batch."""
        if self.cache is not None and balance is not None and balance.oversamples:
            examples = len(balance.oversample_table(self.cache.labels))
        else:
            examples = _epoch_examples(balance, self.count)
        return examples // self.config.batch_size

    def decoded(self) -> tf.data.Dataset:
        """(uint8 image, label) of every example, decoded and resized in parallel, in the source's order."""
        return self.config.preprocessing.decode_examples(self._encoded)

    def batches(
        self, *, training: bool, epoch=0, start_step=0, augmentation=None, balance=None, tuned: bool = True
    ) -> tf.data.Dataset:
        """One epoch: (uint8 images [B, S, S, 3], int64 labels [B][, sample weights]) batches.

        training: epoch `epoch`'s order from step `start_step`, the last partial batch dropped
          (without a cache, epoch None: an order of its own at each pass); otherwise every
          example in order.
        augmentation: a Keras layer applied to each training batch inside the pipeline; leave
          None when augmentation runs in the model.
        balance: a tfpipe.data.balance.ClassBalance for training batches: oversampled and/or
          weighted (images, labels, sample weights).
        tuned: tf.data's autotuning on (pipeline_options).
        """
        batch_size = self.config.batch_size
        balance = balance if training else None
        if self.cache is not None:
            dataset = order.indexed_batches(
                self.cache,
                batch_size,
                training=training,
                seed=self.seed,
                epoch=epoch,
                start_step=start_step,
                table=balance.oversample_table(self.cache.labels) if balance is not None else None,
            )
        else:
            dataset = self._encoded
            if balance is not None:
                dataset = balance.oversample(dataset, lambda example: example[1], exact=self._whole)
            if training:
                # The buffer holds encoded images (decoding comes after it): kilobytes each.
                buffer = self.config.shuffle_buffer or _epoch_examples(balance, self.count)
                if self.service is not None or epoch is None:  # an order of its own at each pass
                    dataset = dataset.shuffle(buffer, seed=self.config.seed, reshuffle_each_iteration=True)
                else:
                    dataset = dataset.shuffle(buffer, seed=order.epoch_seed(self.seed, epoch))
                    dataset = dataset.skip(start_step * batch_size)
            dataset = self.config.preprocessing.decode_examples(dataset)
            # A plain batch(): copying uint8 images is cheap, and a parallel batch's extra
            # buffers cost memory for no speed on the benchmark machine.
            dataset = dataset.batch(batch_size, drop_remainder=training)
        if training and augmentation is not None:
            dataset = dataset.map(
                lambda images, labels: (augment_to_uint8(augmentation, images), labels),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if balance is not None:
            dataset = balance.add_weights(dataset)
        if self.service is not None:
            dataset = self.service.distribute(dataset)
        return dataset.prefetch(PREFETCH_BATCHES).with_options(pipeline_options(self.seed, tuned=tuned))

    def epochs(self, first: int, end: int, start_step: int = 0, **batch_options) -> tf.data.Dataset:
        """Training batches of epochs first .. end-1 in one stream, epoch `first` from `start_step`."""

        def one_epoch(epoch, start):
            return self.batches(training=True, epoch=epoch, start_step=start, **batch_options)

        batches = (end - first) * self.steps(batch_options.get("balance")) - start_step
        stream = order.epochs(first, end, one_epoch, start_step)
        return stream.apply(tf.data.experimental.assert_cardinality(batches)).with_options(pipeline_options(self.seed))

    def every_pass_a_new_epoch(self, first_epoch: int = 0, **batch_options) -> tf.data.Dataset:
        """Training batches, one epoch per pass over the dataset: epoch first_epoch, then the next
        (for a loop that iterates the dataset once per epoch, as fit does without steps_per_epoch)."""
        if self.service is not None or self.cache is None:  # the service's or tf.data's shuffle reorders each pass
            return self.batches(training=True, epoch=None, **batch_options)
        epochs = order.each_pass_next_epoch(first_epoch)
        stream = epochs.flat_map(lambda epoch: self.batches(training=True, epoch=epoch, **batch_options))
        known = tf.data.experimental.assert_cardinality(self.steps(batch_options.get("balance")))
        return stream.apply(known).with_options(pipeline_options(self.seed))


def _epoch_examples(balance, examples: int) -> int:
    return balance.epoch_examples(examples) if balance is not None else examples


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
    log: Callable[[str], None] = logging.info,
    tuned: bool = True,
) -> tf.data.Dataset:
    """Batches of (uint8 images [B, S, S, 3], int64 labels [B]) from `split` of `source` (Pipeline).

    training: shuffled and without the last partial batch; each pass over the dataset is the
      next epoch, in its order, from epoch `epoch_offset`.
    tuned=False: for evaluation data read in a single pass (pipeline_options).
    """
    made = Pipeline(source, split, config, shard=shard, max_examples=max_examples, service=service, log=log)
    if not training:
        return made.batches(training=False, tuned=tuned)
    return made.every_pass_a_new_epoch(epoch_offset, augmentation=augmentation, balance=balance)


def augment_to_uint8(augmentation, images: tf.Tensor) -> tf.Tensor:
    """Runs Keras augmentation layers on a uint8 batch and returns uint8 again.

    Keeping the pipeline's output uint8 whatever the placement means the model
    has one input signature, and the exported model serves plain uint8 images.
    """
    augmented = augmentation(tf.cast(images, tf.float32), training=True)
    return tf.saturate_cast(tf.round(augmented), tf.uint8)


def pipeline_options(seed: int | None, tuned: bool = True) -> tf.data.Options:
    """tuned=False for a single pass in order: deleting an autotuned iterator after its pass held the
    main thread about 1 s in 3 of 8 runs (2-4 ms untuned; BUILD_NOTES.md, "Where a run's first
    seconds go"), and one pass gains nothing from tuning."""
    options = tf.data.Options()
    # A seeded run must give the same order every time; an unseeded one lets
    # parallel stages hand out elements as they finish.
    options.deterministic = seed is not None
    options.autotune.enabled = tuned
    # Parallelism comes from tf.data's own thread pool; ops inside a map using
    # intra-op threads too would oversubscribe the cores (tf.data guide).
    options.threading.max_intra_op_parallelism = 1
    return options


def _exact_count(source, split, shard, max_examples) -> int:
    """Examples this pipeline reads: its share of the split (or the first max_examples)."""
    count = source.count(split)
    if max_examples is not None:
        count = min(count, max_examples)
    if shard is not None:
        count = len(range(shard[1], count, shard[0]))
    return count


def _cache(config, source, split, shard, max_examples, pipeline: Pipeline, log):
    """The ArrayCache or DecodedStore that config.cache asks for (auto: by the memory budget),
    filled; or None."""
    requested = config.cache
    if requested == CACHE_AUTO:  # a caller without a run's plan: this split alone against the budget
        ledger = memory.Ledger(memory.MemoryBudget.detect())
        root = sources.store_root(source.data_dir)
        requested, line = choose_cache(CACHE_AUTO, pipeline.count, config.image_bytes, ledger, root)
        log(line)
    if requested == CACHE_NONE or pipeline.count == 0:
        return None
    # Filled in the source's own order, deterministically (decoding in parallel, handed over in
    # order): slot i must hold the same image in every run, for the epochs' orders drawn over
    # the slots to be the same (data.order).
    options = tf.data.Options()
    options.deterministic = True
    decoded = pipeline.decoded().with_options(options)
    if requested == CACHE_MEMORY:
        cache = ArrayCache(decoded.element_spec, capacity=pipeline.count)
        cache.fill(decoded)
        return cache
    key = store.StoreKey(
        source.name, source.fingerprint(), split, config.image_size, config.decode_options, shard, max_examples
    )
    root = ensure_writable_dir(requested, flag="cache")
    return store.open_or_write(root, key, decoded, pipeline.count, log)
