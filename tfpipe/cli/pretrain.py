"""pretrain: train a base from scratch on formula-drawn images, for offline transfer.

    pretrain --model_dir=runs/fractal                    # 100 fractal classes (about an hour on 2 cores)
    pretrain --model_dir=runs/quick --dataset=tfpipe_fractals/small --epochs=3
    train --backbone=mobilenet_v2 --weights=runs/fractal/base.weights.h5   # fine-tune from it

Writes MODEL_DIR/base.weights.h5 (the no-top base, best validation epoch) and
MODEL_DIR/results.json. Rerun the same command to resume an interrupted run.
"""

from __future__ import annotations

import datetime
import os

from absl import flags

from tfpipe.cli import data_flags, launch, run_flags
from tfpipe.models import backbones
from tfpipe.models import classifier as model
from tfpipe.training.pretrain import PretrainConfig, pretrain

FLAGS = flags.FLAGS
FLAG_MODULES = (data_flags.__name__, run_flags.__name__)
_DEFAULTS = PretrainConfig(model_dir="")

# The data flags are shared with train; pretraining has its own dataset, size and splits.
for name, value in (
    ("dataset", _DEFAULTS.dataset),
    ("train_split", _DEFAULTS.train_split),
    ("val_split", _DEFAULTS.val_split),
    ("test_split", ""),
    ("image_size", _DEFAULTS.pipeline.image_size),
    ("batch_size", _DEFAULTS.pipeline.batch_size),
    ("seed", _DEFAULTS.pipeline.seed),
    ("augment", _DEFAULTS.augment),
):
    FLAGS.set_default(name, value)

flags.DEFINE_enum(
    "backbone",
    _DEFAULTS.backbone,
    list(backbones.BACKBONES),
    "Base to train from scratch.",
)
flags.DEFINE_float("alpha", _DEFAULTS.alpha, "MobileNetV2 width multiplier.")
flags.DEFINE_float("dropout", _DEFAULTS.dropout, "Dropout before the pretraining classes' Dense layer.")
flags.DEFINE_integer("epochs", _DEFAULTS.epochs, "Epochs over the training split.")
flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Peak learning rate of the cosine decay.")
flags.DEFINE_enum("optimizer", _DEFAULTS.optimizer, list(model.OPTIMIZERS), "Optimizer.")
flags.DEFINE_string(
    "model_dir",
    None,
    "Output folder; default: a new runs/pretrain-YYYYmmdd-HHMMSS. Reuse it to resume.",
)
flags.DEFINE_boolean("overwrite", False, "Replace what --model_dir holds instead of resuming it.")


def config_from_flags() -> PretrainConfig:
    model_dir = FLAGS.model_dir or os.path.join("runs", "pretrain-" + datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
    return PretrainConfig(
        model_dir=model_dir,
        dataset=FLAGS.dataset,
        data_dir=FLAGS.data_dir,
        train_split=FLAGS.train_split,
        val_split=FLAGS.val_split,
        pipeline=data_flags.pipeline_config(),
        augment=FLAGS.augment,
        backbone=FLAGS.backbone,
        alpha=FLAGS.alpha,
        dropout=FLAGS.dropout,
        epochs=FLAGS.epochs,
        learning_rate=FLAGS.learning_rate,
        optimizer=FLAGS.optimizer,
        memory_budget=FLAGS.memory_budget,
        checkpoint_every=FLAGS.checkpoint_every,
        overwrite=FLAGS.overwrite,
    )


def main(argv):
    del argv
    _, results = launch.run_job(config_from_flags, pretrain)
    print(
        f"\nDone.\n  best validation accuracy: {results['val_accuracy']:.3f} (epoch {results['best_epoch']})\n"
        f"  training time: {results['training_seconds']:.0f} s\n"
        f"  weights: {results['weights_file']} (sha256 {results['sha256']})\n"
        f"  use them: train --backbone={results['backbone']} --alpha={results['alpha']:g} "
        f"--weights={results['weights_file']}"
    )
