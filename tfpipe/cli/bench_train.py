"""bench_train: time to accuracy, tfpipe against the transfer-learning tutorial's recipe, on
the same data and cores, one after the other in one run.

    bench_train --dataset=tfpipe_shapes/large --json=bench_train.json
    bench_train --dataset=folder:/data/pets --tfpipe_flags='--backbone=mobilenet_v2'
    bench_train --dataset=tfpipe_shapes --repeats=3    # small data: the median of three races

Each side is its own process, timed from its launch, so each pays its own start-up
(imports, reading the data, building the model):
  tutorial  the tutorial's code (tfpipe/bench/tutorial.py): the classic pipeline,
            augmentation in the model, 10 frozen epochs with Adam at 1e-4, then 10
            fine-tuning from --fine_tune_at with RMSprop at 1e-5, on tfpipe's base
  tfpipe    bin/train with the data flags given here (default --augment=none: fast
            feature extraction and cached fine-tuning) and --tfpipe_flags
For each: wall time, the time until validation accuracy first reaches the target (by
default the best the tutorial reached), the best and final validation accuracy and the
test accuracy. The dataset is prepared before either side starts.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

from absl import flags

from tfpipe.bench import pipelines as bench
from tfpipe.bench import tutorial
from tfpipe.cli import data_flags, errors, results_file
from tfpipe.errors import TfpipeError

FLAGS = flags.FLAGS
FLAG_MODULES = (data_flags.__name__,)

flags.DEFINE_integer("initial_epochs", 10, "Frozen-base epochs, both sides.")
flags.DEFINE_integer("fine_tune_epochs", 10, "Fine-tuning epochs, both sides.")
flags.DEFINE_integer("fine_tune_at", 100, "First base layer fine-tuned, both sides.")
flags.DEFINE_float("target", None, "Validation accuracy to race to; default: the best the tutorial reached.")
flags.DEFINE_integer(
    "repeats",
    1,
    "Race this many times, the sides in turn each time; the summary gives the median of the races' ratios "
    "(the unseeded tutorial's time to its best varies between runs: 40.7-147.3 s on tfpipe_shapes).",
)
flags.DEFINE_string("tfpipe_flags", "", "More flags for tfpipe's side (bin/train), e.g. '--mixed_precision'.")
flags.DEFINE_string("json", None, "Also write the results to this JSON file.")
flags.DEFINE_enum("side", "both", ["both", "tutorial"], "Internal: 'tutorial' runs that side alone in this process.")
flags.DEFINE_string("result_file", None, "Internal: where --side=tutorial writes its result.")
# tfpipe's fastest documented recipe: nothing random below the base, so both phases run on cached outputs.
FLAGS.set_default("augment", "none")
# Both sides at one size, the tutorial's unless told: the ratio then measures speed, not resolution.
FLAGS.set_default("image_size", tutorial.IMAGE_SIZE)

_DATA_FLAGS = (
    "dataset",
    "data_dir",
    "train_split",
    "val_split",
    "test_split",
    "image_size",
    "batch_size",
    "memory_budget",  # the tutorial's pipeline caches nothing; tfpipe's side plans its stores by it
)


def main(argv):
    del argv
    with errors.reported():
        if FLAGS.side == "tutorial":
            _run_tutorial_side()
            return
        if FLAGS.repeats < 1:
            raise TfpipeError(f"--repeats={FLAGS.repeats}: race at least once")
        races = []
        for _ in range(FLAGS.repeats):
            races.append(run())
            print(format_table(races[-1]), flush=True)
            results = races[0] if FLAGS.repeats == 1 else summarize(races)
            results_file.write(FLAGS.json, results)  # after each race: a later failure keeps these
    if len(races) > 1:
        print(format_summary(results))


def summarize(races: list[dict]) -> dict:
    """Several races: each in full, and the median of their ratios to the target. A race in which
    tfpipe never reached the target counts as 0; one in which the tutorial never reached a given
    --target has no ratio and is left out (median None when no race has one)."""
    counted = [
        race["speedup_to_target"] or 0.0 for race in races if race["tutorial"]["seconds_to_target"] is not None
    ]
    return {
        "races": races,
        "speedups_to_target": [race["speedup_to_target"] for race in races],
        "median_speedup_to_target": statistics.median(counted) if counted else None,
        "median_speedup_wall": statistics.median(race["speedup_wall"] for race in races),
    }


def format_summary(summary: dict) -> str:
    def race(result):
        if result["tutorial"]["seconds_to_target"] is None:
            return "tutorial never"
        return "tfpipe never" if result["speedup_to_target"] is None else f"{result['speedup_to_target']:.1f}x"

    median = summary["median_speedup_to_target"]
    return (
        f"median of {len(summary['races'])} races: tfpipe reaches the target "
        f"{'(no ratio)' if median is None else f'{median:.1f}x sooner'} "
        f"(races: {', '.join(race(result) for result in summary['races'])}); "
        f"whole runs {summary['median_speedup_wall']:.1f}x"
    )


def run() -> dict:
    if FLAGS.initial_epochs < 1 or FLAGS.fine_tune_epochs < 0:
        raise TfpipeError("--initial_epochs must be at least 1 and --fine_tune_epochs at least 0")
    if FLAGS.target is not None and not 0 < FLAGS.target <= 1:
        raise TfpipeError(f"--target={FLAGS.target} is a validation accuracy: give a number in (0, 1]")
    extra = shlex.split(FLAGS.tfpipe_flags)
    if any(flag.split("=")[0].lstrip("-") in ("model_dir", "overwrite") for flag in extra):
        raise TfpipeError("--tfpipe_flags: bench_train chooses tfpipe's --model_dir itself; leave it out")
    from tfpipe.data import sources

    source = sources.open_source(FLAGS.dataset, FLAGS.data_dir, data_flags.csv_options())  # prepared now
    sources.describe(source, train=FLAGS.train_split, validation=FLAGS.val_split, test=FLAGS.test_split)
    if not FLAGS.test_split:
        raise TfpipeError("--test_split is empty: bench_train reports each side's test accuracy")
    with tempfile.TemporaryDirectory(prefix="tfpipe-bench-train-") as scratch:
        tutorial = _tutorial(scratch)
        tfpipe_side = _tfpipe(scratch, extra)
    target = FLAGS.target if FLAGS.target is not None else tutorial["best_val_accuracy"]
    for side in (tutorial, tfpipe_side):
        side["seconds_to_target"] = _seconds_to(target, side)
    speedup = None
    if tutorial["seconds_to_target"] and tfpipe_side["seconds_to_target"]:
        speedup = tutorial["seconds_to_target"] / tfpipe_side["seconds_to_target"]
    return {
        "dataset": source.name,
        "splits": {"train": FLAGS.train_split, "validation": FLAGS.val_split, "test": FLAGS.test_split},
        "image_size": FLAGS.image_size,
        "batch_size": FLAGS.batch_size,
        "epochs": {"initial": FLAGS.initial_epochs, "fine_tune": FLAGS.fine_tune_epochs},
        "cores": bench.cores(),
        "target_val_accuracy": target,
        "target_from": "--target" if FLAGS.target is not None else "the tutorial's best validation accuracy",
        "tutorial": tutorial,
        "tfpipe": tfpipe_side,
        "speedup_to_target": speedup,
        "speedup_wall": tutorial["wall_seconds"] / tfpipe_side["wall_seconds"],
    }


def _data_args() -> list[str]:
    args = [f"--{name}={FLAGS[name].value}" for name in _DATA_FLAGS if FLAGS[name].value is not None]
    epochs = [f"--initial_epochs={FLAGS.initial_epochs}", f"--fine_tune_epochs={FLAGS.fine_tune_epochs}"]
    return args + epochs + [f"--fine_tune_at={FLAGS.fine_tune_at}"]


def _tool(name: str) -> str:
    """bin/NAME beside this tool (the repository's bin/ or the environment's)."""
    return os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), name)


def _launch(command: list[str], what: str) -> tuple[float, float]:
    """(launch time, wall seconds) of a side's process; TfpipeError with its last lines if it fails."""
    print(f"bench_train: {what} ...", flush=True)
    started = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - started
    if result.returncode != 0:
        tail = " | ".join(result.stderr.strip().splitlines()[-3:])
        raise TfpipeError(f"the {what} side failed (exit status {result.returncode}): {tail}")
    return started, wall


def _tutorial(scratch: str) -> dict:
    result_file = os.path.join(scratch, "tutorial.json")
    command = [sys.executable, _tool("bench_train"), "--side=tutorial", f"--result_file={result_file}"]
    started, wall = _launch(command + _data_args(), "tutorial recipe")
    with open(result_file) as f:
        result = json.load(f)
    return _summary(result["epochs"], result["test_accuracy"], started, wall)


def _tfpipe(scratch: str, extra: list[str]) -> dict:
    model_dir = os.path.join(scratch, "tfpipe_run")
    args = _data_args() + [f"--augment={FLAGS.augment}", f"--model_dir={model_dir}", "--noexport", *extra]
    if FLAGS.seed is not None:
        args.append(f"--seed={FLAGS.seed}")
    started, wall = _launch([sys.executable, _tool("train"), *args], "tfpipe")
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)
    with open(os.path.join(model_dir, "results.json")) as f:
        results = json.load(f)
    summary = _summary(history, results["test_accuracy"], started, wall)
    summary["flags"] = [arg for arg in args if not arg.startswith("--model_dir=")]
    summary["cached_fine_tuning"] = results.get("cached_fine_tuning")
    summary["fast_feature_extraction"] = results.get("fast_feature_extraction")
    summary["first_epoch_seconds"] = results.get("first_epoch_seconds")  # where its first seconds went
    summary["input_wait"] = results.get("input_wait")
    return summary


def _summary(epochs: list[dict], test_accuracy: float, started: float, wall: float) -> dict:
    curve = [
        {"epoch": e["epoch"], "seconds": round(e["finished_at"] - started, 2), "val_accuracy": e["val_accuracy"]}
        for e in epochs
    ]
    return {
        "wall_seconds": round(wall, 2),
        "best_val_accuracy": max(e["val_accuracy"] for e in curve),
        "final_val_accuracy": curve[-1]["val_accuracy"],
        "test_accuracy": test_accuracy,
        "curve": curve,
    }


def _seconds_to(target: float, side: dict) -> float | None:
    for point in side["curve"]:
        if point["val_accuracy"] >= target - 1e-9:
            return point["seconds"]
    return None


def _run_tutorial_side() -> None:
    from tfpipe.data import sources
    from tfpipe.models import backbones
    from tfpipe.models import weights as weights_lib

    if not FLAGS.result_file:
        raise TfpipeError("--side=tutorial needs --result_file")
    dataset = sources.DatasetSpec.parse(FLAGS.dataset)
    weights = weights_lib.resolve(
        "auto", backbone="efficientnet_lite0", alpha=1.0, dataset=str(dataset), offline_dataset=dataset.is_local
    )
    base = backbones.get("efficientnet_lite0").build_base(FLAGS.image_size, weights.keras_weights)
    source = sources.open_source(FLAGS.dataset, FLAGS.data_dir, data_flags.csv_options())
    splits = {"train": FLAGS.train_split, "validation": FLAGS.val_split, "test": FLAGS.test_split}
    result = tutorial.run(
        source,
        splits,
        base,
        image_size=FLAGS.image_size,
        initial_epochs=FLAGS.initial_epochs,
        fine_tune_epochs=FLAGS.fine_tune_epochs,
        fine_tune_at=FLAGS.fine_tune_at,
        batch_size=FLAGS.batch_size,
    )
    with open(FLAGS.result_file, "w") as out:
        json.dump(result, out)


def format_table(results: dict) -> str:
    target = results["target_val_accuracy"]
    lines = [f"\n{'side':<10}{'wall s':>9}{f's to val {target:.3f}':>18}{'best val':>10}{'final val':>11}{'test':>8}"]
    for name in ("tutorial", "tfpipe"):
        side = results[name]
        to_target = "never" if side["seconds_to_target"] is None else f"{side['seconds_to_target']:.1f}"
        lines.append(
            f"{name:<10}{side['wall_seconds']:>9.1f}{to_target:>18}{side['best_val_accuracy']:>10.3f}"
            f"{side['final_val_accuracy']:>11.3f}{side['test_accuracy']:>8.3f}"
        )
    speedup = results["speedup_to_target"]
    lines.append(
        f"tfpipe reaches the target {'(never)' if speedup is None else f'{speedup:.1f}x sooner'}; "
        f"whole runs {results['speedup_wall']:.1f}x"
    )
    lines.append(
        f"{results['dataset']}, {results['image_size']} px, batch {results['batch_size']}, "
        f"{results['epochs']['initial']}+{results['epochs']['fine_tune']} epochs, {results['cores']} cores; "
        f"target: {results['target_from']}"
    )
    return "\n".join(lines)
