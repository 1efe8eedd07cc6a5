"""bench_input: images/s of the classic tutorial pipeline and of tfpipe's, on the same data, each
stage of tfpipe's alone beside the model's training step, and what bounds training.

    bench_input --dataset=tfpipe_shapes/large --epochs=3 --json=bench.json --plot=stages.png
    bench_input --dataset=tfpipe_shapes/large --memory_budget=256MB   # the decoded store on disk
    bench_input --dataset=folder:/data/pets --augment_on=pipeline     # is the pipeline's augmentation the bound?

For each pipeline: the first (cold) epoch and the median of later (warm) epochs,
and tfpipe's start-up to its first batch. The classic pipeline is measured twice:
with no parallelism (the baseline of tfpipe's targets; "classic" and
speedup_cold/speedup_warm in the JSON) and as it runs on TensorFlow's and tfds'
default parallelism ("classic_tf_defaults"). Then each stage alone (reading the files, decode and
resize, the cache, augmentation in the pipeline) and the model's training step at --backbone,
--image_size, --batch_size and --augment_on, frozen and fine-tuning from --fine_tune_at
(bench.stages): the last line says what bounds training and the flag that would move it
(--nostages skips this). When the split does not fit --memory_budget,
tfpipe's pipeline reads a decoded store on disk: its cold epoch includes writing the store,
the memory cache is measured beside it where the split fits this machine, and a second
process reads the store as the next run on the same data would ("second_process"). The
comparison itself is tfpipe.bench.pipelines.compare; this tool reads flags and prints.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from absl import flags

from tfpipe import memory
from tfpipe.bench import pipelines as bench
from tfpipe.cli import data_flags, errors, model_flags, results_file
from tfpipe.data import sources, splits
from tfpipe.errors import TfpipeError
from tfpipe.models import augment, backbones

FLAGS = flags.FLAGS
FLAG_MODULES = (data_flags.__name__, model_flags.__name__)  # shown by --help besides this module's own

flags.DEFINE_integer(
    "epochs", bench.DEFAULT_EPOCHS, "Epochs per pipeline: one cold, the rest warm; 1 measures the cold epoch only."
)
flags.DEFINE_integer("max_batches", None, "Use only the first max_batches x batch_size images of the split.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_string("plot", None, "Also draw each stage's images/s against the model's training rates to this PNG file.")
flags.DEFINE_boolean(
    "stages", True, "Measure each pipeline stage alone and the model's training step, and say what bounds training."
)
flags.DEFINE_boolean(
    "classic", True, "Also measure the classic tutorial pipeline with no parallelism: the baseline of the targets."
)
flags.DEFINE_boolean(
    "second_process",
    True,
    "When tfpipe's pipeline reads a decoded store, also measure a second process reading it (decoding nothing).",
)
flags.DEFINE_boolean(
    "classic_tf_defaults",
    True,
    "Also measure the classic pipeline as it runs on TensorFlow's and tfds' defaults (parallel decode and map).",
)

# What the second process reads again as this one did (the cache, the baselines and the output are its own).
_SECOND_PROCESS_FLAGS = (
    "dataset",
    "data_dir",
    "image_dir",
    "csv_file_column",
    "csv_label_column",
    "train_split",
    "batch_size",
    "seed",
    "jpeg_dct_scaling",
    "max_batches",
    "augment",
    "augment_on",
    "epochs",
)
# Each classic baseline's label in the table; its flag is named like its key in the results.
_LABELS = {bench.CLASSIC_SERIAL: "classic (serial)", bench.CLASSIC_TF_DEFAULTS: "classic (TF defaults)"}


def main(argv):
    del argv
    with errors.reported():
        results = run()
    print(format_table(results))
    results_file.write(FLAGS.json, results)
    if FLAGS.plot and "stages" in results:
        from tfpipe.inference import report

        title = (
            f"{results['dataset']}, {results['image_size']} px, batch {results['batch_size']}, {FLAGS.backbone}, "
            f"{results['cores']} cores\n{results['stages']['verdict']}"
        )
        report.plot_stages(results["stages"], FLAGS.plot, _wrapped(title))
        print(f"Wrote {FLAGS.plot}")


def _wrapped(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in text.splitlines())


def run() -> dict:
    if FLAGS.epochs < 1:
        raise TfpipeError(f"--epochs={FLAGS.epochs} must be at least 1 (1 measures the cold epoch only)")
    if FLAGS.max_batches is not None and FLAGS.max_batches <= 0:
        raise TfpipeError(f"--max_batches={FLAGS.max_batches} must be positive")
    splits.parse(FLAGS.train_split, flag="train_split")
    backbone = backbones.get(FLAGS.backbone)
    config = data_flags.pipeline_config().sized(backbone.native_size)  # the size a run on this base would use
    data_service = data_flags.data_service()  # a malformed address fails now, before any data work
    steps = data_flags.augment_steps()
    augmentation = (
        augment.build(steps, seed=FLAGS.seed)
        if augment.check_placement(FLAGS.augment_on, data_service=data_service is not None) == "pipeline"
        else None
    )
    config.check_cache_folder()
    budget = memory.MemoryBudget.detect(FLAGS.memory_budget)
    print(budget.describe())
    results = bench.compare(
        lambda: sources.open_source(FLAGS.dataset, FLAGS.data_dir, data_flags.csv_options()),
        FLAGS.train_split,
        config,
        epochs=FLAGS.epochs,
        max_batches=FLAGS.max_batches,
        augmentation=augmentation,
        service=data_service,
        baselines=[mode for mode, (key, _) in bench.BASELINE_RECORDS.items() if FLAGS[key].value],
        budget=budget,
        store_root=sources.store_root(FLAGS.data_dir),
        model_rates=_model_rates(config, steps) if FLAGS.stages else None,
    )
    if results["store"] is not None and results["store"]["written"] and FLAGS.second_process:
        results["second_process"] = _second_process(results["cache"], config.image_size)
    return results


def _model_rates(config, augment_steps):
    """The model's training step at the run's backbone, size, batch and augmentation placement
    (random weights: the arithmetic is the same). The base is built and --fine_tune_at checked
    now, before any measuring."""
    from tfpipe.models import trainable

    backbone = backbones.get(FLAGS.backbone)
    base = backbone.build_base(config.image_size, None, FLAGS.alpha)
    index = trainable.resolve_fine_tune_at(base, FLAGS.fine_tune_at)

    def measure(source) -> dict:
        from tfpipe.bench import stages
        from tfpipe.models import classifier

        in_model = augment.build(augment_steps, seed=FLAGS.seed) if FLAGS.augment_on == "model" else None
        model = classifier.build_classifier(
            backbone, base, config.image_size, source.num_classes, augmentation=in_model
        )
        return stages.model_rates(model, base, index, config.image_size, config.batch_size, source.num_classes)

    return measure


def _second_process(store_root: str, image_size: int) -> dict:
    """bench_input's tfpipe side again, in a new process reading the store this one wrote."""
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "second.json")
        keep = [name for name in _SECOND_PROCESS_FLAGS if FLAGS[name].present]
        # serialize() gives --name=value, or --[no]name for a boolean
        command = [sys.executable, sys.argv[0], *[FLAGS[name].serialize() for name in keep]]
        command += [
            f"--image_size={image_size}",  # resolved here (a backbone's own size); the second process builds no model
            f"--cache={store_root}",
            "--noclassic",
            "--noclassic_tf_defaults",
            "--nosecond_process",
            "--nostages",  # this process measured them
            f"--json={out}",
        ]
        print("bench_input: a second process reads the store ...", flush=True)
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise TfpipeError(f"the second process failed: {result.stderr.strip().splitlines()[-1:]}")
        with open(out) as f:
            second = json.load(f)
    return {**second["tfpipe"], "peak_rss_mb": second["peak_rss_mb"], "store": second["store"]}


def format_table(results: dict) -> str:
    width = 28
    lines = [f"\n{'pipeline':<{width}}{'cold images/s':>16}{'warm images/s':>16}"]
    on_disk = results["store"] is not None
    rows = [(key, _LABELS[mode]) for mode, (key, _) in bench.BASELINE_RECORDS.items()]
    rows += [("tfpipe", "tfpipe (store on disk)" if on_disk else "tfpipe")]
    rows += [("memory_cache", "tfpipe (memory cache)"), ("second_process", "tfpipe, 2nd process")]
    for key, label in rows:
        if key in results:
            r = results[key]
            lines.append(f"{label:<{width}}{_column(r['cold_images_per_sec'])}{_column(r.get('warm_images_per_sec'))}")
    for mode, (key, suffix) in bench.BASELINE_RECORDS.items():
        label = _LABELS[mode]
        if key in results:
            cold, warm = results[f"speedup_cold{suffix}"], results.get(f"speedup_warm{suffix}")
            lines.append(f"{'tfpipe / ' + label:<{width}}{_column(cold, 'x')}{_column(warm, 'x')}")
    over_idle = results["peak_rss_mb"] - results["idle_rss_mb"]
    if on_disk:
        lines.append(
            f"peak RSS (tfpipe): {results['peak_rss_mb']:,.0f} MB; idle {results['idle_rss_mb']:,.0f} MB; +{over_idle:,.0f} MB "
            f"with the {results['cached_images_mb']:,.0f} MB of decoded images on disk ({results['cache']})"
        )
    else:
        lines.append(
            f"peak RSS (tfpipe): {results['peak_rss_mb']:,.0f} MB; idle {results['idle_rss_mb']:,.0f} MB; "
            f"+{over_idle:,.0f} MB = {results['rss_over_idle_per_cached_mb']:.2f}x the "
            f"{results['cached_images_mb']:,.0f} MB of cached uint8 images (cache={results['cache']})"
        )
    if "memory_cache" in results:
        lines.append(f"peak RSS after the memory cache too: {results['memory_cache']['peak_rss_mb']:,.0f} MB")
    if results.get("cache_line"):
        lines.append(results["cache_line"])
    if on_disk and results["store"]["written"]:
        write = results["num_images"] / results["store"]["seconds"]
        warm = results["tfpipe"].get("warm_images_per_sec")
        lines.append(
            f"decoded store: written at {write:,.0f} images/s (decode and write, part of the cold epoch)"
            + (f"; the warm epochs read it {warm / write:.1f}x as fast" if warm else "")
        )
    if "second_process" in results:
        second = results["second_process"]
        what = "wrote it again" if second["store"]["written"] else "decoded nothing"
        lines.append(
            f"second process: read the store in {second['store']['seconds']:.2f} s to open, {what}; "
            f"peak RSS {second['peak_rss_mb']:,.0f} MB"
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
        f"{results['num_images']} images of {results['image_size']}px, batch {results['batch_size']}, "
        f"{results['cores']} cores"
    )
    if "stages" in results:
        lines += _stage_table(results["stages"])
    return "\n".join(lines)


def _stage_table(stages: dict) -> list[str]:
    width = 28
    lines = [f"\n{'stage, alone':<{width}}{'images/s':>16}"]
    read_mb = stages.get("read_mb_per_sec")
    for name, rate in stages["pipeline"].items():
        if rate is not None:
            extra = f"  ({read_mb:,.1f} MB/s)" if name == "read" and read_mb else ""
            lines.append(f"{name:<{width}}{_column(rate)}{extra}")
    for phase, rate in stages["model"].items():
        lines.append(f"{'model, ' + phase:<{width}}{_column(rate)}")
    lines.append(f"bound: {stages['verdict']}")
    return lines


def _column(value, unit="") -> str:
    """A right-aligned table cell: images/s, a ratio with `unit`, or '-' when not measured."""
    if value is None:
        return f"{'-':>16}"
    return f"{value:>15.2f}{unit}" if unit else f"{value:>16,.0f}"


if __name__ == "__main__":
    sys.exit("run bin/bench_input")
