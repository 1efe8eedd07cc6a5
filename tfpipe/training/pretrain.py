"""Pretraining a base from scratch (formula-drawn images by default), for a domain far from ImageNet.

    pretrain(PretrainConfig(model_dir="runs/fractal"))   # -> runs/fractal/base.weights.h5

The base (MobileNetV2 by default) learns to tell tfpipe_fractals' IFS classes
apart, through tfpipe's own pipeline and classifier; what it keeps is its
feature extractor, written as a no-top weights file that `train --weights=PATH`
loads. Unlike fine-tuning, the whole base trains and its BatchNorm statistics
follow the data, so every weight is checkpointed; the run resumes after its last completed epoch like train().
The learning rate follows a cosine decay over the planned steps (the usual
from-scratch schedule: large steps first, small ones to settle), and the
optimizer's step count, checkpointed with it, keeps a resumed run on the curve.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import keras
import tensorflow as tf

from tfpipe import atomic, memory
from tfpipe.data import order, pipeline, sources, splits
from tfpipe.data.builders import PRETRAINING_DATASET
from tfpipe.errors import TfpipeError
from tfpipe.models import augment, backbones
from tfpipe.models import classifier as model_lib
from tfpipe.models import weights as weights_lib
from tfpipe.runs.files import RESULTS
from tfpipe.runs.state import RunDirectory
from tfpipe.training import callbacks, input_wait, memory_plan, resume
from tfpipe.training.config import SPLIT_FLAGS, check_train_split_fills_a_batch

PHASE = "pretrain"
BASE_WEIGHTS = "base.weights.h5"
# The cosine decay ends at this share of the peak learning rate, not at zero.
FINAL_LR_SHARE = 0.01
BATCHNORM_MOMENTUM = 0.99


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    model_dir: str
    dataset: str = PRETRAINING_DATASET
    data_dir: str | None = None
    train_split: str = "train[:90%]"
    val_split: str = "train[90%:]"
    pipeline: pipeline.PipelineConfig = pipeline.PipelineConfig(image_size=64, batch_size=64, seed=0)
    augment: str = "flip=horizontal"
    backbone: str = "mobilenet_v2"
    alpha: float = 1.0
    dropout: float = 0.2
    epochs: int = 15
    learning_rate: float = 2e-3
    optimizer: str = "adam"
    memory_budget: str | None = None  # tfpipe.memory; where the data is kept, not fingerprinted
    checkpoint_every: str = resume.DEFAULT_EVERY  # saves inside an epoch (training.resume)
    overwrite: bool = False
    verbose: int | str = "auto"

    def fingerprint(self) -> dict:
        """What decides the weights: a model_dir only resumes a pretraining with the same values."""
        values = {
            k: v
            for k, v in dataclasses.asdict(self).items()
            if k
            not in {"model_dir", "data_dir", "overwrite", "verbose", "pipeline", "memory_budget", "checkpoint_every"}
        }
        values.update({f"pipeline.{k}": v for k, v in dataclasses.asdict(self.pipeline).items() if k != "cache"})
        return json.loads(json.dumps(values))

    def validate(self) -> None:
        if self.epochs <= 0:
            raise TfpipeError(f"--epochs={self.epochs} must be at least 1")
        if not self.learning_rate > 0:
            raise TfpipeError(f"--learning_rate={self.learning_rate} must be a positive number")
        if not 0 <= self.dropout < 1:
            raise TfpipeError(f"--dropout={self.dropout} must be in [0, 1)")
        if self.optimizer not in model_lib.OPTIMIZERS:
            raise TfpipeError(f"--optimizer={self.optimizer!r}: use one of {', '.join(model_lib.OPTIMIZERS)}")
        for flag in ("train_split", "val_split"):
            if not getattr(self, flag):
                raise TfpipeError(f"--{flag} is empty: pretraining needs a training and a validation split")
            splits.parse(getattr(self, flag), flag=flag)
        backbones.get(self.backbone).check(self.pipeline.image_size, self.alpha)
        augment.parse(self.augment)
        self.pipeline.check_cache_folder()
        if self.memory_budget is not None:
            memory.parse_size(self.memory_budget)
        resume.Every.parse(self.checkpoint_every)


def pretrain(config: PretrainConfig, *, extra_callbacks: tuple = (), log: Callable[[str], None] = print) -> dict:
    """Trains (or resumes training) the base from scratch; returns what results.json holds.

    Example::

        import tfpipe

        results = tfpipe.pretrain(tfpipe.PretrainConfig(model_dir="runs/base", epochs=5))
        print(results["weights_file"])  # runs/base/base.weights.h5, a no-top weights file, and its sha256
    """
    started = time.monotonic()
    config.validate()
    run_dir = RunDirectory(config.model_dir, config.fingerprint(), overwrite=config.overwrite, all_weights=True)
    with run_dir:
        keras.utils.set_random_seed(config.pipeline.seed or 0)  # before any weight is created
        dataset = sources.DatasetSpec.parse(config.dataset)
        sources.check_spec(dataset, config.data_dir)
        backbone = backbones.get(config.backbone)
        base = backbone.build_base(config.pipeline.image_size, None, config.alpha)
        _follow_batch_statistics_faster(base)
        source, metadata = _open_data(config, dataset)
        config = _with_cache(config, source, metadata, log)
        classifier = model_lib.build_classifier(
            backbone,
            base,
            config.pipeline.image_size,
            metadata.num_classes,
            dropout=config.dropout,
            augmentation=augment.build(augment.parse(config.augment), seed=config.pipeline.seed, dtype="float32"),
            seed=config.pipeline.seed,
            frozen_statistics=False,
        )
        run_dir.start(classifier)
        if run_dir.resumed:
            log(f"Resuming {run_dir.path} after epoch {run_dir.state.completed_epochs}")
        log(
            f"Pretraining {backbone.name} (alpha {config.alpha}) from scratch on {metadata.name}: "
            f"{metadata.num_classes} classes, {metadata.num_examples['train']} training images of "
            f"{config.pipeline.image_size} px, epochs {run_dir.state.completed_epochs + 1}-{config.epochs}"
        )
        _compile(classifier, config, metadata, run_dir, log)
        clock = callbacks.PhaseClock(run_dir.state.wall_seconds)
        _fit(classifier, config, source, run_dir, clock, extra_callbacks, log)
        run_dir.best.load_into(classifier)
        weights_file = run_dir.file(BASE_WEIGHTS)
        with atomic.replacing(weights_file, what="the pretrained weights") as temporary:
            base.save_weights(temporary)
        results = results_record(config, run_dir.state, metadata, weights_file, clock, time.monotonic() - started)
        atomic.write_json(run_dir.file(RESULTS), results)
        return results


def _open_data(config: PretrainConfig, dataset: sources.DatasetSpec):
    source = sources.open_source(dataset, config.data_dir)
    metadata = sources.describe(source, flags=SPLIT_FLAGS, train=config.train_split, validation=config.val_split)
    model_lib.check_num_classes(metadata.num_classes, source.name)
    check_train_split_fills_a_batch(metadata, config.train_split, config.pipeline.batch_size)
    return source, metadata


def _with_cache(config: PretrainConfig, source, metadata, log) -> PretrainConfig:
    """The config with its cache where the memory budget allows (training.memory_plan.image_cache)."""
    budget = memory.MemoryBudget.detect(config.memory_budget)
    examples = metadata.num_examples["train"] + metadata.num_examples["validation"]
    ledger = memory.Ledger(budget)
    cache, line = memory_plan.image_cache(
        config.pipeline, config.data_dir, examples, source.mean_encoded_bytes(), ledger
    )
    log(budget.describe())
    log(line)
    return dataclasses.replace(config, pipeline=dataclasses.replace(config.pipeline, cache=cache))


def _compile(classifier, config: PretrainConfig, metadata, run_dir: RunDirectory, log) -> None:
    """The optimizer on a cosine decay over every planned step, its state restored on a resumed run."""
    steps_per_epoch = metadata.num_examples["train"] // config.pipeline.batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=steps_per_epoch * config.epochs, alpha=FINAL_LR_SHARE
    )
    optimizer = model_lib.make_optimizer(config.optimizer, schedule)
    model_lib.compile_classifier(classifier, metadata.num_classes, optimizer)
    if run_dir.restore_optimizer(classifier.optimizer, classifier.trainable_variables, PHASE):
        log(f"Restored the optimizer state of epoch {run_dir.state.completed_epochs}")


def _fit(classifier, config: PretrainConfig, source, run_dir: RunDirectory, clock, extra_callbacks, log) -> None:
    """Every epoch in its order (data.order), saved inside epochs as --checkpoint_every says, so a
    killed pretraining resumes at the step it saved (training.resume)."""
    seed = run_dir.data_seed(order.seed_or_draw(config.pipeline.seed))
    train_data = pipeline.Pipeline(source, config.train_split, config.pipeline, seed=seed, log=log)
    val_data = pipeline.Pipeline(source, config.val_split, config.pipeline, seed=seed, log=log)
    clock.start(PHASE)
    try:
        resume.fit_resumable(
            classifier,
            run_dir=run_dir,
            checkpointed=classifier,
            phase=PHASE,
            first=run_dir.state.completed_epochs,
            end=config.epochs,
            steps=train_data.count // config.pipeline.batch_size,
            train_stream=lambda epochs: train_data.epochs(*epochs),
            validation=val_data.batches(training=False),
            every=resume.Every.parse(config.checkpoint_every),
            clock=clock,
            callbacks=[
                *input_wait.measuring(classifier, tf.distribute.get_strategy(), jit_compile=False, log=log),
                callbacks.EpochRecorder(run_dir, classifier, PHASE, clock),
                *extra_callbacks,
            ],
            verbose=config.verbose,
            log=log,
        )
    finally:
        clock.stop()


def results_record(config: PretrainConfig, state, metadata, weights_file: str, clock, seconds_this_call) -> dict:
    """What results.json holds: the weights file, its checksum, and the best epoch's accuracy."""
    best = next(record for record in state.history if record["epoch"] == state.best_epoch)
    return {
        "weights_file": weights_file,
        "sha256": weights_lib.sha256_of(weights_file),
        "backbone": config.backbone,
        "alpha": config.alpha,
        "dataset": metadata.name,
        "num_classes": metadata.num_classes,
        "examples": metadata.num_examples,
        "image_size": config.pipeline.image_size,
        "epochs": config.epochs,
        "best_epoch": state.best_epoch,
        "val_accuracy": best["val_accuracy"],
        "val_loss": best["val_loss"],
        "train_accuracy": best["accuracy"],
        "training_seconds": round(clock.snapshot().get(PHASE, 0.0), 1),  # every call's epochs, resumed ones too
        "input_wait": input_wait.share(state.history),  # training.input_wait
        "wall_seconds_this_call": round(seconds_this_call, 1),
    }


def _follow_batch_statistics_faster(base) -> None:
    """Keras' MobileNetV2 averages BatchNorm statistics with momentum 0.999, a
    memory of about 1,000 steps: fine for ImageNet's 500,000 steps, but in a
    pretraining of a few thousand the averages would still describe the first,
    random weights (a 4-epoch trial scored chance on its validation split with
    them). 0.99 remembers about 100 steps."""
    for layer in base._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = min(layer.momentum, BATCHNORM_MOMENTUM)
