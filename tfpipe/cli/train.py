"""train: fine-tune a pretrained image classifier in two phases.

    train --fine_tune_at=100 --initial_epochs=10        # the embedded dataset, offline
    train --dataset=cats_vs_dogs                        # the tutorial's data, with internet
    train --dataset=folder:/data/pets --backbone=mobilenet_v2

Rerun the same command with the same --model_dir to resume an interrupted run.
"""

from __future__ import annotations

import datetime
import os

from absl import flags

from tfpipe.cli import data_flags, launch, model_flags, run_flags
from tfpipe.data import balance
from tfpipe.models import classifier as model
from tfpipe.runs import files as run_files
from tfpipe.training import distribute
from tfpipe.training.train import TrainConfig, train

FLAGS = flags.FLAGS
# Shown by --help besides this module's own.
FLAG_MODULES = (data_flags.__name__, model_flags.__name__, run_flags.__name__)
_DEFAULTS = TrainConfig(model_dir="")  # every flag's default is the library's

flags.DEFINE_string(
    "weights",
    _DEFAULTS.weights,
    "auto (imagenet: read offline from its package for efficientnet_lite0; for other backbones downloaded, "
    "or none on the embedded datasets), imagenet, none, or a no-top .h5 file.",
)
flags.DEFINE_float("dropout", _DEFAULTS.dropout, "Dropout before the final Dense layer.")
flags.DEFINE_integer("initial_epochs", _DEFAULTS.initial_epochs, "Feature-extraction epochs, base frozen.")
flags.DEFINE_integer(
    "fine_tune_epochs", _DEFAULTS.fine_tune_epochs, "Fine-tuning epochs after them; 0 keeps the base frozen throughout."
)
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Learning rate of feature extraction.")
flags.DEFINE_float(
    "fine_tune_lr_factor", _DEFAULTS.fine_tune_lr_factor, "Fine-tuning learning rate = learning_rate x this."
)
flags.DEFINE_enum(
    "class_weight",
    _DEFAULTS.class_weight,
    list(balance.CLASS_WEIGHTS),
    "balanced: weight each class's loss by n / (classes x its count), so rare classes count as much as common ones.",
)
flags.DEFINE_enum(
    "balance",
    _DEFAULTS.balance,
    list(balance.BALANCES),
    "oversample: repeat each class's training images up to the largest class's count every epoch.",
)
flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer, list(model.OPTIMIZERS), "Optimizer of both phases.")
flags.DEFINE_boolean("mixed_precision", _DEFAULTS.mixed_precision, "Compute in float16 with loss scaling (for GPUs).")
flags.DEFINE_boolean("jit_compile", _DEFAULTS.jit_compile, "Compile the training step with XLA.")
flags.DEFINE_boolean(
    "fast_feature_extraction",
    _DEFAULTS.fast_feature_extraction,
    "With --augment=none, run the frozen base once and train the head on its features.",
)
flags.DEFINE_integer(
    "early_stopping",
    _DEFAULTS.early_stopping,
    "Stop a phase after this many epochs without a lower val_loss (Keras' EarlyStopping); 0: off.",
)
flags.DEFINE_boolean(
    "cached_fine_tuning",
    _DEFAULTS.cached_fine_tuning,
    "With --augment=none, run the layers below --fine_tune_at once and fine-tune the rest on their "
    "activations (end to end, with a line, when they do not fit --memory_budget).",
)
flags.DEFINE_enum(
    "strategy",
    _DEFAULTS.strategy,
    list(distribute.STRATEGIES),
    "auto (mirrored when more than one GPU is visible), one_device, mirrored, or multi_worker (reads TF_CONFIG).",
)
flags.DEFINE_string("model_dir", None, "Output folder; default: a new runs/YYYYmmdd-HHMMSS. Reuse it to resume.")
flags.DEFINE_boolean("overwrite", _DEFAULTS.overwrite, "Replace what --model_dir holds instead of resuming it.")
flags.DEFINE_boolean(
    "export",
    _DEFAULTS.export,
    "Write export/, a SavedModel for TF Serving; --noexport skips it (it takes 6-7 s on 2 CPU cores).",
)


def config_from_flags() -> TrainConfig:
    model_dir = FLAGS.model_dir or os.path.join("runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return TrainConfig(
        model_dir=model_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        csv=data_flags.csv_options(),
        train_split=FLAGS.train_split,
        val_split=FLAGS.val_split,
        test_split=FLAGS.test_split,
        pipeline=data_flags.pipeline_config(),
        augment=FLAGS.augment,
        augment_on=FLAGS.augment_on,
        backbone=FLAGS.backbone,
        alpha=FLAGS.alpha,
        weights=FLAGS.weights,
        dropout=FLAGS.dropout,
        fine_tune_at=FLAGS.fine_tune_at,
        initial_epochs=FLAGS.initial_epochs,
        fine_tune_epochs=FLAGS.fine_tune_epochs,
        learning_rate=FLAGS.learning_rate,
        fine_tune_lr_factor=FLAGS.fine_tune_lr_factor,
        early_stopping=FLAGS.early_stopping,
        class_weight=FLAGS.class_weight,
        balance=FLAGS.balance,
        optimizer=FLAGS.optimizer,
        mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        fast_feature_extraction=FLAGS.fast_feature_extraction,
        cached_fine_tuning=FLAGS.cached_fine_tuning,
        strategy=FLAGS.strategy,
        data_service=FLAGS.data_service,
        data_service_sharding=FLAGS.data_service_sharding,
        data_service_timeout=FLAGS.data_service_timeout,
        memory_budget=FLAGS.memory_budget,
        checkpoint_every=FLAGS.checkpoint_every,
        overwrite=FLAGS.overwrite,
        export=FLAGS.export,
    )


def main(argv):
    del argv
    config, results = launch.run_job(config_from_flags, train)
    print(summary(results, config.model_dir, exported=config.export))


def _outputs(exported: bool, evaluated: bool) -> str:
    names = [run_files.RESULTS, run_files.HISTORY, run_files.BEST_MODEL, run_files.FINAL_MODEL]
    names += [f"{run_files.EXPORT_DIR}/"] if exported else []
    names += [run_files.TRAINING_CURVES, run_files.TIME_PLOT, f"{run_files.TENSORBOARD_DIR}/"]
    names += [f"{run_files.EVALUATION_DIR}/"] if evaluated else []
    return ", ".join(names)


def summary(results: dict, model_dir: str, *, exported: bool) -> str:
    accuracy = results["test_accuracy"]
    lines = [
        "",
        "Done.",
        f"  test accuracy: {accuracy:.3f} (loss {results['test_loss']:.3f}), "
        f"from the best epoch, {results['best_epoch']}"
        if accuracy is not None
        else f"  best epoch: {results['best_epoch']} (no test split)",
        f"  started from weights: {results['weights_used']}",
        f"  wall time: {results['wall_seconds']['total']:.0f} s "
        f"(feature extraction {results['wall_seconds']['feature_extraction']:.0f} s, "
        f"fine-tuning {results['wall_seconds']['fine_tune']:.0f} s)",
        f"  files in {os.path.abspath(model_dir)}: {_outputs(exported, evaluated=accuracy is not None)}",
    ]
    return "\n".join(lines)
