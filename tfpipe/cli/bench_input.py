"""bench_input: images/s of the classic tutorial pipeline and of tfpipe's, on the same data.

    bench_input --dataset=tfpipe_shapes/large --epochs=3 --json=bench.json

For each pipeline: the first (cold) epoch and the median of later (warm) epochs.
The classic pipeline is measured twice: with no parallelism (the baseline of
tfpipe's targets; "classic" and speedup_cold/speedup_warm in the JSON) and as
it runs on TensorFlow's and tfds' default parallelism ("classic_tf_defaults").
tfpipe runs first so that its peak memory is not the classic's; all read the
same files, which a first pass has put in the OS page cache.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import flags

from tfpipe import augment, bench
from tfpipe.cli import data_flags, errors
from tfpipe.data import pipeline, service, sources, splits
from tfpipe.errors import TfpipeError

FLAGS = flags.FLAGS
FLAG_MODULES = (data_flags.__name__,)  # shown by --help besides this module's own

flags.DEFINE_integer("epochs", 3, "Epochs per pipeline: one cold, the rest warm; 1 measures the cold epoch only.")
flags.DEFINE_integer("max_batches", None, "Use only the first max_batches x batch_size images of the split.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_boolean(
    "classic", True, "Also measure the classic tutorial pipeline with no parallelism: the baseline of the targets."
)
flags.DEFINE_boolean(
    "classic_tf_defaults",
    True,
    "Also measure the classic pipeline as it runs on TensorFlow's and tfds' defaults (parallel decode and map).",
)

# Each classic baseline: its result key, the mode that builds it, its label in
# the table and the suffix of its speedup keys (the JSON names the
# serial one's plainly: speedup_cold, speedup_warm).
_BASELINES = (
    ("classic", bench.CLASSIC_SERIAL, "classic (serial)", ""),
    ("classic_tf_defaults", bench.CLASSIC_TF_DEFAULTS, "classic (TF defaults)", "_vs_tf_defaults"),
)


def main(argv):
    del argv
    with errors.reported():
        results = run()
    print(format_table(results))
    if FLAGS.json:
        with open(FLAGS.json, "w") as out:
            json.dump(results, out, indent=2)
        print(f"Wrote {FLAGS.json}")


def run() -> dict:
    if FLAGS.epochs < 1:
        raise TfpipeError(f"--epochs={FLAGS.epochs} must be at least 1 (1 measures the cold epoch only)")
    if FLAGS.max_batches is not None and FLAGS.max_batches <= 0:
        raise TfpipeError(f"--max_batches={FLAGS.max_batches} must be positive")
    splits.parse(FLAGS.train_split, flag="train_split")
    config = data_flags.pipeline_config()
    data_service = data_flags.data_service()  # a malformed address fails now, before any data work
    steps = data_flags.augment_steps()
    augmentation = (
        augment.build(steps, seed=FLAGS.seed) if augment.check_placement(FLAGS.augment_on) == "pipeline" else None
    )
    config.check_cache_folder()
    started = time.monotonic()  # the start-up a training run pays too: index the data, then the first batch
    source = sources.open_source(FLAGS.dataset, FLAGS.data_dir, data_flags.csv_options())
    metadata = sources.describe(source, train=FLAGS.train_split)
    indexed = time.monotonic()
    num_images = metadata.num_examples["train"]
    if FLAGS.max_batches is not None:
        num_images = min(num_images, FLAGS.max_batches * config.batch_size)
    if num_images < config.batch_size:
        raise TfpipeError(
            f"{FLAGS.train_split} gives {num_images} images, fewer than one batch of --batch_size={config.batch_size}"
        )
    max_examples = num_images if FLAGS.max_batches is not None else None

    tfpipe_ds = pipeline.build(
        source,
        FLAGS.train_split,
        config,
        training=True,
        augmentation=augmentation,
        max_examples=max_examples,
        service=data_service,
    )
    with service.watching(data_service):
        next(iter(tfpipe_ds))
    first_batch = time.monotonic()
    print(f"Dataset {source.name}, split {FLAGS.train_split}: {num_images} images; {_cores()} cores", flush=True)
    print(
        f"Start-up: {first_batch - started:.2f} s to the first batch ({indexed - started:.2f} s opening and "
        f"indexing the dataset, {first_batch - indexed:.2f} s building the pipeline and filling its shuffle buffer)",
        flush=True,
    )
    # Read every file once so neither pipeline pays for the disk and the other not.
    bench.run_epoch(source.encoded(FLAGS.train_split).take(num_images).batch(256))
    idle_rss = bench.current_rss_mb()
    with service.watching(data_service):
        tfpipe_epochs = _measure("tfpipe", tfpipe_ds, FLAGS.epochs, num_images, config.batch_size)
        tfpipe_peak = bench.peak_rss_mb()
        reshuffled = bench.epochs_reshuffled(tfpipe_ds)
    cached_mb = num_images * config.image_size**2 * 3 / 2**20  # the uint8 images a memory cache holds
    results = {
        "tfpipe": _rates(tfpipe_epochs),
        "start_up_seconds": {
            "index": round(indexed - started, 2),
            "first_batch": round(first_batch - indexed, 2),
            "total": round(first_batch - started, 2),
        },
        "num_images": num_images,
        "image_size": config.image_size,
        "batch_size": config.batch_size,
        "cores": _cores(),
        "dataset": source.name,
        "split": FLAGS.train_split,
        "cache": config.cache,
        "epochs": FLAGS.epochs,
        "jpeg_dct_scaling": config.jpeg_dct_scaling,
        "augment_in_pipeline": augmentation is not None,
        "data_service": FLAGS.data_service,
        "data_service_sharding": FLAGS.data_service_sharding if FLAGS.data_service else None,
        "epochs_reshuffled": reshuffled,
        "peak_rss_mb": round(tfpipe_peak, 1),
        "idle_rss_mb": round(idle_rss, 1),
        "cached_images_mb": round(cached_mb, 1),
        "rss_over_idle_per_cached_mb": round((tfpipe_peak - idle_rss) / cached_mb, 2),
    }
    for key, mode, label, suffix in _BASELINES:
        if not FLAGS[key].value:  # each baseline has a boolean flag named like its key
            continue
        classic_ds = bench.classic_pipeline(
            source, FLAGS.train_split, config.image_size, config.batch_size, max_examples=max_examples, mode=mode
        )
        results[key] = _rates(_measure(label, classic_ds, FLAGS.epochs, num_images, config.batch_size))
        results[key]["mode"] = mode
        for phase in ("cold", "warm"):
            rate = f"{phase}_images_per_sec"
            if rate in results[key]:  # no warm epoch with --epochs=1
                results[f"speedup_{phase}{suffix}"] = round(results["tfpipe"][rate] / results[key][rate], 2)
        results["classic_peak_rss_mb"] = round(bench.peak_rss_mb(), 1)
    return results


def _measure(name, dataset, epochs, num_images, batch_size):
    from keras.utils import Progbar

    timings = []
    for epoch in range(1, epochs + 1):
        label = "cold" if epoch == 1 else "warm"
        print(f"{name} epoch {epoch}/{epochs} ({label})", flush=True)
        bar = Progbar(target=-(-num_images // batch_size), unit_name="batch", stateful_metrics=["images"])
        timing = bench.run_epoch(dataset, on_progress=lambda b, i: bar.update(b, values=[("images", i)]))
        print(
            f"  {timing.images} images in {timing.seconds:.2f} s: {timing.images_per_sec:,.0f} images/s; "
            f"RSS {bench.current_rss_mb():,.0f} MB, peak {bench.peak_rss_mb():,.0f} MB",
            flush=True,
        )
        timings.append(timing)
    return timings


def _rates(epochs):
    rates = {"cold_images_per_sec": round(epochs[0].images_per_sec, 1)}
    if len(epochs) > 1:
        rates["warm_images_per_sec"] = round(bench.warm_rate(epochs), 1)
    rates["epoch_images_per_sec"] = [round(e.images_per_sec, 1) for e in epochs]
    return rates


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def format_table(results: dict) -> str:
    width = 28
    lines = [f"\n{'pipeline':<{width}}{'cold images/s':>16}{'warm images/s':>16}"]
    rows = [(key, label) for key, _, label, _ in _BASELINES] + [("tfpipe", "tfpipe")]
    for key, label in rows:
        if key in results:
            r = results[key]
            lines.append(f"{label:<{width}}{_column(r['cold_images_per_sec'])}{_column(r.get('warm_images_per_sec'))}")
    for key, _, label, suffix in _BASELINES:
        if key in results:
            cold, warm = results[f"speedup_cold{suffix}"], results.get(f"speedup_warm{suffix}")
            lines.append(f"{'tfpipe / ' + label:<{width}}{_column(cold, 'x')}{_column(warm, 'x')}")
    lines.append(
        f"peak RSS (tfpipe): {results['peak_rss_mb']:,.0f} MB; idle {results['idle_rss_mb']:,.0f} MB; "
        f"+{results['peak_rss_mb'] - results['idle_rss_mb']:,.0f} MB = {results['rss_over_idle_per_cached_mb']:.2f}x "
        f"the {results['cached_images_mb']:,.0f} MB of cached uint8 images (cache={results['cache']})"
    )
    lines.append(
        "epochs reshuffled: "
        + (
            "yes, two epochs start with different batches"
            if results["epochs_reshuffled"]
            else "NO: every epoch repeats the same order"
        )
    )
    lines.append(
        f"{results['num_images']} images of {results['image_size']}px, batch {results['batch_size']}, {results['cores']} cores"
    )
    return "\n".join(lines)


def _column(value, unit="") -> str:
    """A right-aligned table cell: images/s, a ratio with `unit`, or '-' when not measured."""
    if value is None:
        return f"{'-':>16}"
    return f"{value:>15.2f}{unit}" if unit else f"{value:>16,.0f}"


if __name__ == "__main__":
    sys.exit("run bin/bench_input")
