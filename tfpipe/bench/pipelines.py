"""Throughput and memory of input pipelines, measured the same way for each.

The consumer pulls batches inside a tf.function, a chunk at a time, so Python
overhead per batch does not cap the rate being measured; only the pipeline does.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import resource
import statistics
import time
from typing import Callable

import tensorflow as tf

from tfpipe import memory
from tfpipe.data import file_index, pipeline, sources, store
from tfpipe.data import service as service_lib
from tfpipe.errors import TfpipeError

CLASSIC_SHUFFLE_BUFFER = 1000  # the tutorial's SHUFFLE_BUFFER_SIZE
# The baseline tfpipe's speed targets are stated against: the tutorial's
# pipeline with no parallelism.
CLASSIC_SERIAL = "serial"
# The same code as it runs with today's TensorFlow and tfds defaults.
CLASSIC_TF_DEFAULTS = "tf_defaults"
CLASSIC_MODES = (CLASSIC_SERIAL, CLASSIC_TF_DEFAULTS)
# Each classic baseline's key in the results and the suffix of its speedup keys
# (the JSON names the serial one's plainly: speedup_cold, speedup_warm).
BASELINE_RECORDS = {CLASSIC_SERIAL: ("classic", ""), CLASSIC_TF_DEFAULTS: ("classic_tf_defaults", "_vs_tf_defaults")}
_BATCHES_PER_PULL = 16
DEFAULT_EPOCHS = 3  # one cold, two warm


def compare(
    open_source: Callable[[], sources.Source],
    split: str,
    config: pipeline.PipelineConfig,
    *,
    epochs: int = DEFAULT_EPOCHS,
    max_batches: int | None = None,
    augmentation=None,
    service: service_lib.DataService | None = None,
    baselines=CLASSIC_MODES,
    budget: memory.MemoryBudget | None = None,
    store_root: str | None = None,
    model_rates: Callable | None = None,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """tfpipe's pipeline against the classic ones on `split`: what bench_input reports and writes.

    open_source: opens the dataset; it is timed as part of the start-up (from
      here to tfpipe's first batch), which is what a training run pays too.
    budget, store_root: with config.cache "auto", the split goes to memory when it fits
      `budget` (default: the process's, tfpipe.memory), else to a decoded store in
      `store_root`. A store's writing is part of tfpipe's cold epoch, and then the
      memory cache is measured beside it when the split fits this machine's memory.
    model_rates(source) -> {"frozen": images/s, "fine-tuning": images/s}: the model's training
      step; given, each pipeline stage is measured alone too (bench.stages) and results["stages"]
      holds them, the model's rates, the bound and the verdict line.
    The order matters: the dataset is opened first (the index cache as found); then
    one pass reads every file, so every pipeline finds them in the OS page cache; then
    tfpipe's pipeline is built (its cache filled: the cold epoch's decoding, timed into
    the cold epoch) and its epochs run, before the classic ones, so its peak memory is
    its own.
    """
    budget = budget or memory.MemoryBudget.detect()
    start = _StartUp.measure(open_source, split, config, max_batches, augmentation, service, budget, store_root, log)
    config = start.config
    log(f"Dataset {start.source.name}, split {split}: {start.num_images} images; {cores()} cores")
    log(
        f"Start-up: {start.seconds['total']:.2f} s to the first batch ({start.seconds['index']:.2f} s opening and "
        f"indexing the dataset, {start.seconds['first_batch']:.2f} s building the pipeline, its cache filled)"
    )
    idle_rss = start.idle_rss_mb
    measure = functools.partial(
        _measure, epochs=epochs, num_images=start.num_images, batch_size=config.batch_size, log=log, progress=progress
    )
    with service_lib.watching(service):
        tfpipe_epochs = measure("tfpipe", start.dataset)
        tfpipe_peak = peak_rss_mb()
        reshuffled = epochs_reshuffled(start.dataset)
    on_disk = config.cache not in pipeline.CACHE_CHOICES
    if start.filled:  # the cache was filled (a store written) as the pipeline was built: the cold epoch pays for it
        tfpipe_epochs[0] = Epoch(tfpipe_epochs[0].images, tfpipe_epochs[0].seconds + start.seconds["build"])
    cached_mb = start.num_images * config.image_bytes / 2**20  # the uint8 images a memory cache holds
    results = {
        "tfpipe": _rates(tfpipe_epochs),
        "start_up_seconds": start.seconds,
        "num_images": start.num_images,
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "cores": cores(),
        "dataset": start.source.name,
        "split": split,
        "cache": config.cache,
        "cache_line": start.cache_line,
        "memory_budget_bytes": budget.bytes,
        "store": {"folder": config.cache, "written": start.wrote_store, "seconds": start.seconds["build"]}
        if on_disk
        else None,
        "epochs": epochs,
        "jpeg_dct_scaling": config.jpeg_dct_scaling,
        "augment_in_pipeline": augmentation is not None,
        "data_service": service.address if service is not None else None,
        "data_service_sharding": service.sharding if service is not None else None,
        "epochs_reshuffled": reshuffled,
        "peak_rss_mb": round(tfpipe_peak, 1),
        "idle_rss_mb": round(idle_rss, 1),
        "cached_images_mb": round(cached_mb, 1),
        "rss_over_idle_per_cached_mb": round((tfpipe_peak - idle_rss) / cached_mb, 2),
    }
    if on_disk and pipeline.fits_in_memory(start.num_images, config.image_bytes, memory.MemoryBudget.detect()):
        in_memory = dataclasses.replace(config, cache=pipeline.CACHE_MEMORY)
        memory_ds = pipeline.build(
            start.source, split, in_memory, training=True, augmentation=augmentation, max_examples=start.max_examples
        )
        results["memory_cache"] = {**_rates(measure("tfpipe, memory cache", memory_ds)), "peak_rss_mb": peak_rss_mb()}
    for mode in baselines:
        classic_ds = classic_pipeline(
            start.source, split, config.image_size, config.batch_size, max_examples=start.max_examples, mode=mode
        )
        results.update(_baseline_record(mode, measure(BASELINE_RECORDS[mode][0], classic_ds), results["tfpipe"]))
    if model_rates is not None:
        results["stages"] = _stages(start, config, augmentation, model_rates, log)
    return results


def _stages(start, config, augmentation, model_rates, log) -> dict:
    from tfpipe.bench import stages

    log("Each stage alone: reading, decoding, the cache, augmentation in the pipeline, the model's step")
    rates = stages.pipeline_stages(start.source, start.split, config, start.pipeline, augmentation, start.max_examples)
    model = model_rates(start.source)
    bound, line = stages.verdict(rates, model)
    return {
        "pipeline": {name: rates[name] for name in stages.ADVICE},
        "read_mb_per_sec": rates["read_mb_per_sec"],
        "model": model,
        "bound": bound,
        "verdict": line,
    }


@dataclasses.dataclass(frozen=True)
class _StartUp:
    """The opened dataset, tfpipe's pipeline over it, and how long it took to its first batch."""

    source: sources.Source
    split: str
    num_images: int
    max_examples: int | None
    pipeline: pipeline.Pipeline
    dataset: tf.data.Dataset
    seconds: dict
    config: pipeline.PipelineConfig  # with its cache chosen
    cache_line: str | None
    wrote_store: bool  # the pipeline wrote a decoded store (seconds["build"]) rather than reading one
    idle_rss_mb: float  # before the pipeline was made: the process with its data opened, nothing cached

    @property
    def filled(self) -> bool:
        """The pipeline decoded the split into its cache while it was built (the cold epoch's work)."""
        return self.wrote_store or self.config.cache == pipeline.CACHE_MEMORY

    @classmethod
    def measure(
        cls, open_source, split, config, max_batches, augmentation, service, budget, store_root, log
    ) -> _StartUp:
        started = time.monotonic()
        source = open_source()
        num_images = sources.describe(source, flags={"train": "train_split"}, train=split).num_examples["train"]
        indexed = time.monotonic()
        if max_batches is not None:
            num_images = min(num_images, max_batches * config.batch_size)
        if num_images < config.batch_size:
            raise TfpipeError(
                f"{split} gives {num_images} images, fewer than one batch of --batch_size={config.batch_size}"
            )
        max_examples = num_images if max_batches is not None else None
        cache_line = None
        if service is None and config.cache == pipeline.CACHE_AUTO:
            root = store_root or sources.store_root(source.data_dir)
            cache, cache_line = pipeline.choose_cache(
                config.cache, num_images, config.image_bytes, memory.Ledger(budget), root
            )
            config = dataclasses.replace(config, cache=cache)
            log(cache_line)
        said = []
        # Every file read once first, as the classic pipelines will find them: in the page cache.
        warm_started = time.monotonic()
        run_epoch(source.encoded(split).take(num_images).batch(256))
        warmed = time.monotonic() - warm_started  # not part of the start-up
        idle_rss = current_rss_mb()
        made = pipeline.Pipeline(
            source,
            split,
            config,
            max_examples=max_examples,
            service=service,
            log=lambda line: said.append(line) or log(line),
        )
        dataset = made.every_pass_a_new_epoch(0, augmentation=augmentation)
        built = time.monotonic()
        wrote_store = any(line.startswith(store.WRITING) for line in said)
        with service_lib.watching(service):
            next(iter(dataset))
        first_batch = time.monotonic()
        seconds = {
            "index": round(indexed - started, 2),
            "build": round(built - indexed - warmed, 2),  # the cache is filled (a store written) here
            "first_batch": round(first_batch - indexed - warmed, 2),
            "total": round(first_batch - started - warmed, 2),
        }
        return cls(
            source, split, num_images, max_examples, made, dataset, seconds, config, cache_line, wrote_store, idle_rss
        )


def _baseline_record(mode: str, epochs: list[Epoch], tfpipe_rates: dict) -> dict:
    """A classic baseline's rates under its key, and tfpipe's speedups over it."""
    key, suffix = BASELINE_RECORDS[mode]
    record = {key: {**_rates(epochs), "mode": mode}, "classic_peak_rss_mb": round(peak_rss_mb(), 1)}
    for phase in ("cold", "warm"):
        rate = f"{phase}_images_per_sec"
        if rate in record[key]:  # no warm epoch with one epoch
            record[f"speedup_{phase}{suffix}"] = round(tfpipe_rates[rate] / record[key][rate], 2)
    return record


def _measure(name, dataset, *, epochs, num_images, batch_size, log, progress) -> list[Epoch]:
    from keras.utils import Progbar

    timings = []
    for epoch in range(1, epochs + 1):
        log(f"{name} epoch {epoch}/{epochs} ({'cold' if epoch == 1 else 'warm'})")
        on_progress = None
        if progress:
            bar = Progbar(target=-(-num_images // batch_size), unit_name="batch", stateful_metrics=["images"])
            on_progress = lambda b, i, bar=bar: bar.update(b, values=[("images", i)])  # noqa: E731
        timing = run_epoch(dataset, on_progress=on_progress)
        log(
            f"  {timing.images} images in {timing.seconds:.2f} s: {timing.images_per_sec:,.0f} images/s; "
            f"RSS {current_rss_mb():,.0f} MB, peak {peak_rss_mb():,.0f} MB"
        )
        timings.append(timing)
    return timings


def _rates(epochs: list[Epoch]) -> dict:
    rates = {"cold_images_per_sec": round(epochs[0].images_per_sec, 1)}
    if len(epochs) > 1:
        rates["warm_images_per_sec"] = round(warm_rate(epochs), 1)
    rates["epoch_images_per_sec"] = [round(e.images_per_sec, 1) for e in epochs]
    return rates


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def classic_pipeline(
    source, split: str, image_size: int, batch_size: int, max_examples: int | None = None, mode: str = CLASSIC_SERIAL
):
    """The transfer-learning tutorial's pipeline: decoded images, map(format_example)
    to float32 in [-1, 1] at the target size, shuffle(1000), batch(32); no
    cache and no prefetch of its own.

    mode CLASSIC_SERIAL: no parallelism. Files are read one at a time and each
      image is decoded, formatted, shuffled and batched in the consumer's
      thread; only tfds' record parsing keeps a thread of its own (tfds always
      parses in a parallel map). TensorFlow's automatic map parallelization and
      prefetch injection are turned off: they would add back exactly the
      parallelism and prefetch this baseline is defined without. (A map with
      num_parallel_calls=1 is not serial: it runs on a background thread,
      overlapping decode with format_example.)
    mode CLASSIC_TF_DEFAULTS: the tutorial's code as it runs on TensorFlow 2.21
      and tfds 4.9 defaults: tfds reads files and decodes images in autotuned
      parallel maps, TensorFlow parallelizes format_example and injects a
      prefetch. (tfds would also auto-cache a dataset under 250 MB; the
      tutorial's cats_vs_dogs is bigger, so nothing is cached here either.)
    """
    if mode not in CLASSIC_MODES:
        raise ValueError(f"unknown classic mode {mode!r}; one of {CLASSIC_MODES}")
    serial = mode == CLASSIC_SERIAL

    def format_example(image, label):
        image = tf.cast(image, tf.float32)
        image = (image / 127.5) - 1
        image = tf.image.resize(image, (image_size, image_size))
        return image, label

    raw = source.encoded(split, parallel=not serial)
    if max_examples is not None:
        raw = raw.take(max_examples)
    raw = raw.map(
        lambda encoded, label: (file_index.decode_image(encoded), label),
        num_parallel_calls=None if serial else tf.data.AUTOTUNE,
    )
    if not serial:
        raw = raw.prefetch(tf.data.AUTOTUNE)  # tfds ends its reader with one
    dataset = raw.map(format_example).shuffle(CLASSIC_SHUFFLE_BUFFER).batch(batch_size)
    if serial:
        options = tf.data.Options()
        options.experimental_optimization.map_parallelization = False
        options.experimental_optimization.inject_prefetch = False
        dataset = dataset.with_options(options)
    return dataset


@dataclasses.dataclass(frozen=True)
class Epoch:
    images: int
    seconds: float

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


def run_epoch(dataset: tf.data.Dataset, on_progress: Callable[[int, int], None] | None = None) -> Epoch:
    """Iterates `dataset` once; returns images seen and wall time (tracing excluded)."""
    iterator = iter(dataset)
    _pull.get_concrete_function(iterator)  # trace before the clock starts
    images = batches = 0
    collecting = gc.isenabled()
    gc.disable()  # as timeit does: Python's collector is not part of any pipeline
    try:
        start = time.perf_counter()
        while True:
            count, got = (int(v) for v in _pull(iterator))
            images += count
            batches += got
            if on_progress is not None:
                on_progress(batches, images)
            if got < _BATCHES_PER_PULL:
                break
        seconds = time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()
    return Epoch(images, seconds)


@tf.function
def _pull(iterator):
    """Takes up to _BATCHES_PER_PULL batches; returns (images, batches) taken."""
    images = tf.constant(0, tf.int64)
    batches = tf.constant(0, tf.int64)
    for _ in tf.range(_BATCHES_PER_PULL):
        element = iterator.get_next_as_optional()
        if not element.has_value():
            break
        images += tf.shape(element.get_value()[0], out_type=tf.int64)[0]
        batches += 1
    return images, batches


def warm_rate(epochs: list[Epoch]) -> float:
    """Images/s of the epochs after the first: their median, robust to one slow epoch."""
    later = epochs[1:] or epochs
    return statistics.median(e.images_per_sec for e in later)


def batch_fingerprints(dataset: tf.data.Dataset, batches: int) -> list[tuple[int, ...]]:
    """A checksum per image of the first `batches` batches of one full epoch.

    The epoch is read to its end: a cache fills only on a complete pass, and a
    cache after batch() is exactly the trap this must see.
    """
    prints = []
    for images, _ in dataset:
        if len(prints) < batches:
            sums = tf.reduce_sum(tf.cast(images, tf.int64) * _position_weights(images), axis=[1, 2, 3])
            prints.append(tuple(int(v) for v in sums.numpy()))
    return prints


def _position_weights(images):
    # Weighting by position makes two different images with equal pixel sums unlikely to collide.
    shape = tf.shape(images)[1:]
    return tf.reshape(tf.range(1, tf.reduce_prod(shape) + 1, dtype=tf.int64) % 251 + 1, shape)


def epochs_reshuffled(dataset: tf.data.Dataset, batches: int = 3) -> bool:
    """Whether two epochs of `dataset` start with different batches."""
    return batch_fingerprints(dataset, batches) != batch_fingerprints(dataset, batches)


def current_rss_mb() -> float:
    return _status_mb("VmRSS") or peak_rss_mb()


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM). Not getrusage's ru_maxrss: Linux carries that across
    fork and exec, so a process started by a big one reports its parent's peak."""
    return _status_mb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None
