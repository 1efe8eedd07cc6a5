"""What bounds training: each stage of the input pipeline measured alone, the model's training step
beside them, and the verdict in one line (bench_input prints it).

    read           the split's encoded files, read and nothing else            MB/s, images/s
    decode         decode + resize to uint8 at the run's size                  images/s
    cache          the decoded images read back from the cache or the store    images/s
    augmentation   the augmentation layers in the pipeline, on cached batches  images/s
    model          the training step at the run's backbone, size, batch and    images/s
                   placement: base frozen, and fine-tuning from fine_tune_at

The first epoch reads and decodes; later epochs read the cache. The pipeline bounds training when
its slowest stage gives fewer images/s than the model trains on (frozen, the faster of the two
phases); the verdict names that stage and the flag that moves it, or says that the model is the
bound and input is not the bottleneck.
"""

from __future__ import annotations

import time

import numpy as np
import tensorflow as tf

from tfpipe.data import pipeline

WARM_STEPS = 3  # model steps timed after the first, which traces
# Per stage: what it does, and what would move the bound.
ADVICE = {
    "read": "reading the files",
    "decode": "decode and resize",
    "cache": "reading the decoded images back",
    "augmentation": "augmentation in the pipeline",
}
FLAGS = {
    "read": "put the files on faster storage, or preprocess on other machines with --data_service",
    "decode": "--cache=auto keeps decoding to the first epoch; more cores, a smaller --image_size or "
    "--data_service speed it",
    "cache": "give the cache memory (--memory_budget) so that --cache=auto keeps it in memory",
    "augmentation": "use --augment_on=model",
}


def _rate(images: int, seconds: float) -> float:
    return images / seconds if seconds > 0 else float("inf")


# A split whose pass takes less is timed over several passes: over one pass of a few batches, the
# iterator's start decided the rate (a 32-image cache epoch measured 789-3,493 img/s).
MIN_TIMED_SECONDS = 0.25


def time_dataset(dataset: tf.data.Dataset, images_of=lambda element: int(element[1].shape[0])) -> tuple[int, float]:
    """(images, seconds) of whole passes over `dataset`, one or as many as take MIN_TIMED_SECONDS,
    timed after a first pass that warms the files' page cache, tf.data's threads and any tracing."""
    for _ in dataset:
        pass
    images, started = 0, time.perf_counter()
    while True:
        for element in dataset:
            images += images_of(element)
        seconds = time.perf_counter() - started
        if seconds >= MIN_TIMED_SECONDS or images == 0:
            return images, seconds


def pipeline_stages(source, split: str, config: pipeline.PipelineConfig, made, augmentation, max_examples) -> dict:
    """Images/s of each pipeline stage alone ("read", "decode", "cache", "augmentation"; None where the
    run has no such stage), and "read_mb_per_sec". `made`: the run's Pipeline of the split (its cache)."""
    encoded = source.encoded(split)
    if max_examples is not None:
        encoded = encoded.take(max_examples)
    lengths = encoded.map(lambda image, label: tf.strings.length(image)).batch(64).prefetch(2)
    batches = [batch.numpy() for batch in lengths]
    bytes_per_image = sum(int(batch.sum()) for batch in batches) / max(1, sum(len(batch) for batch in batches))
    read_rate = _rate(*time_dataset(lengths, images_of=lambda batch: int(batch.shape[0])))
    decoded = config.preprocessing.decode_examples(encoded)
    rates = {
        "read": read_rate,
        "read_mb_per_sec": read_rate * bytes_per_image / 2**20 if read_rate else None,
        "decode": _rate(*time_dataset(decoded.batch(16).prefetch(2))),
        "cache": None,
        "augmentation": None,
    }
    cached = made.batches(training=True, epoch=0) if made.cache is not None else None
    if cached is not None:
        rates["cache"] = _rate(*time_dataset(cached))
    if augmentation is not None:
        sample = next(iter(cached if cached is not None else decoded.batch(config.batch_size)))[0]
        repeated = tf.data.Dataset.from_tensors(sample).repeat(20)
        augmented = repeated.map(lambda batch: pipeline.augment_to_uint8(augmentation, batch))
        rates["augmentation"] = _rate(*time_dataset(augmented, images_of=lambda batch: int(batch.shape[0])))
    return rates


def model_rates(classifier, base, fine_tune_index: int, image_size: int, batch_size: int, num_classes: int) -> dict:
    """Images/s of the training step, base frozen and fine-tuning from fine_tune_index: a few warm
    steps on random uint8 batches already in memory (the model alone)."""
    from tfpipe.models import classifier as model_lib
    from tfpipe.models import trainable

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 255, (batch_size, image_size, image_size, 3), dtype=np.uint8))
    labels = tf.constant(rng.integers(0, num_classes, batch_size), tf.int64)
    rates = {}
    for phase, prepare in (
        ("frozen", lambda: trainable.freeze(base)),
        ("fine-tuning", lambda: trainable.unfreeze_from(base, fine_tune_index)),
    ):
        prepare()
        model_lib.compile_classifier(classifier, num_classes, model_lib.make_optimizer("rmsprop", 1e-4))
        classifier.train_on_batch(images, labels)  # traces
        started = time.perf_counter()
        for _ in range(WARM_STEPS):
            classifier.train_on_batch(images, labels)
        rates[phase] = _rate(WARM_STEPS * batch_size, time.perf_counter() - started)
    return rates


def verdict(pipeline_rates: dict, model: dict) -> tuple[str, str]:
    """(the bound: a stage's name or "model", one line saying what bounds training and what moves it)."""
    trains_at = max(rate for rate in model.values() if rate)  # the input must keep up with the faster phase
    pipeline_rates = {name: rate for name, rate in pipeline_rates.items() if name in ADVICE}
    later = {name: pipeline_rates[name] for name in ("cache", "augmentation") if pipeline_rates.get(name)}
    first = {name: pipeline_rates[name] for name in ("read", "decode", "augmentation") if pipeline_rates.get(name)}
    model_text = ", ".join(f"{rate:,.0f} img/s {phase}" for phase, rate in model.items() if rate)
    if later:
        slowest = min(later, key=later.get)
        if later[slowest] < trains_at:
            return slowest, (
                f"{ADVICE[slowest]} ({later[slowest]:,.0f} img/s) bounds training (the model trains at {model_text}): "
                f"{FLAGS[slowest]}"
            )
    slowest_first = min(first, key=first.get)
    if first[slowest_first] < trains_at:
        after = f"; later epochs read the cache at {later['cache']:,.0f} img/s" if later.get("cache") else ""
        return slowest_first, (
            f"{ADVICE[slowest_first]} bounds the first epoch at {first[slowest_first]:,.0f} img/s{after}; "
            f"the model trains at {model_text}: {FLAGS[slowest_first]}"
        )
    pipeline_rate = min({**first, **later}.values())
    return "model", (
        f"the model bounds training at {model_text}; the pipeline gives at least {pipeline_rate:,.0f} img/s: "
        "input is not the bottleneck (a GPU, a smaller --image_size, or --augment=none for cached features "
        "would speed training)"
    )
