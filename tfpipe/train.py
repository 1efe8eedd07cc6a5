"""A whole fine-tuning run: data, model, the two phases, and everything written to --model_dir.

    results = train(TrainConfig(model_dir="runs/demo", fine_tune_at="100"))

Order of work: every check that can fail on bad input runs before anything slow
(dataset preparation, training), and the model directory is resumable: calling
train() again with the same config continues after the last completed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
import warnings
from typing import Callable

import keras
import tensorflow as tf

from tfpipe import augment, backbones, callbacks, distribute, features, finetune, report
from tfpipe import model as model_lib
from tfpipe.data import pipeline, sources, splits
from tfpipe.data import service as service_lib
from tfpipe.data.builders import EMBEDDED_DATASET
from tfpipe.errors import TfpipeError
from tfpipe.run_state import RunDirectory, write_json_atomic

BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"
# Batches whose statistics initialize a random base's BatchNorm layers (weights=none).
CALIBRATION_BATCHES = 4
EXPORT_DIR = "export"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    dataset: str = sources.DEFAULT_DATASET
    data_dir: str | None = None
    train_split: str = "train[:80%]"
    val_split: str = "train[80%:90%]"
    test_split: str = "train[90%:]"
    pipeline: pipeline.PipelineConfig = pipeline.PipelineConfig()
    augment: str = augment.DEFAULT_AUGMENT
    augment_on: str = "model"
    backbone: str = "mobilenet_v2"
    alpha: float = 1.0
    weights: str = "auto"
    dropout: float = 0.2
    fine_tune_at: str = "100"
    initial_epochs: int = 10
    fine_tune_epochs: int = 10
    learning_rate: float = 1e-4
    fine_tune_lr_factor: float = 0.1
    optimizer: str = "rmsprop"
    mixed_precision: bool = False
    jit_compile: bool = False
    fast_feature_extraction: bool = True
    strategy: str = "auto"
    data_service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher
    data_service_sharding: str = "off"
    overwrite: bool = False
    verbose: int | str = "auto"

    def fingerprint(self) -> dict:
        """What decides the run's result: a model_dir only resumes a run with the same values."""
        # Where a run computes (devices, workers, the data service) is not part of
        # what it computes: a run can resume on other hardware.
        ignored = {
            "model_dir",
            "data_dir",
            "overwrite",
            "verbose",
            "pipeline",
            "strategy",
            "data_service",
            "data_service_sharding",
        }
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}
        values.update({f"pipeline.{k}": v for k, v in dataclasses.asdict(self.pipeline).items() if k != "cache"})
        return json.loads(json.dumps(values))  # as it reads back from state.json

    def validate(self) -> None:
        for flag in ("initial_epochs", "fine_tune_epochs"):
            if getattr(self, flag) < 0:
                raise TfpipeError(f"--{flag}={getattr(self, flag)} is negative; give 0 or more epochs")
        if self.initial_epochs + self.fine_tune_epochs == 0:
            raise TfpipeError("--initial_epochs and --fine_tune_epochs are both 0: there is nothing to train")
        for flag in ("learning_rate", "fine_tune_lr_factor"):
            value = getattr(self, flag)
            if not (value > 0 and math.isfinite(value)):
                raise TfpipeError(f"--{flag}={value} must be a positive number")
        if not 0 <= self.dropout < 1:
            raise TfpipeError(f"--dropout={self.dropout} must be in [0, 1)")
        if self.optimizer not in model_lib.OPTIMIZERS:
            raise TfpipeError(f"--optimizer={self.optimizer!r}: use one of {', '.join(model_lib.OPTIMIZERS)}")
        if not self.val_split:
            raise TfpipeError("--val_split is empty: the best checkpoint is chosen on the validation split")
        for flag in ("train_split", "val_split", "test_split"):
            if getattr(self, flag):
                splits.parse(getattr(self, flag), flag=flag)
        backbones.get(self.backbone).check(self.pipeline.image_size, self.alpha)
        steps = augment.parse(self.augment)
        augment.check_placement(self.augment_on)
        if self.jit_compile and self.augment_on == "model" and any(name == "rotation" for name, _ in steps):
            raise TfpipeError(
                "--jit_compile with rotation in the model fails: RandomRotation has no XLA kernel in TF 2.21; "
                "use --augment_on=pipeline or drop rotation from --augment"
            )
        self.pipeline.check_cache_folder()
        distribute.check_strategy(self.strategy)
        self.service()

    def service(self) -> service_lib.DataService | None:
        return service_lib.optional_service(self.data_service, self.data_service_sharding)

    @property
    def uses_fast_feature_extraction(self) -> bool:
        return self.fast_feature_extraction and not augment.parse(self.augment) and self.initial_epochs > 0


def is_embedded(dataset: str) -> bool:
    return dataset.split("/")[0].split(":")[0] == EMBEDDED_DATASET


def train(
    config: TrainConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    extra_callbacks: tuple = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or resumes) the two-phase fine-tuning; returns what results.json holds.

    strategy: overrides config.strategy (e.g. a MirroredStrategy over chosen devices).
    """
    started = time.monotonic()
    config.validate()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = strategy or distribute.make_strategy(config.strategy)
    placement = distribute.Placement.of(strategy)
    model_dir = config.model_dir
    if not placement.is_chief:
        # Other workers compute the same model; their files go aside, as Keras advises.
        model_dir = os.path.join(config.model_dir, "workers", placement.task)
    run_dir = RunDirectory(model_dir, config.fingerprint(), overwrite=config.overwrite)
    weights = backbones.resolve_weights(config.weights, embedded_dataset=is_embedded(config.dataset))
    log(f"Weights: {_describe_weights(config.weights, weights)}")
    if placement.num_replicas > 1 or placement.task:
        log(
            f"Strategy: {type(strategy).__name__}, {placement.num_replicas} replicas"
            + (f"; this is {placement.task}{' (chief)' if placement.is_chief else ''}" if placement.task else "")
        )
    if run_dir.resumed:
        log(f"Resuming {run_dir.path} after epoch {run_dir.state.completed_epochs}")
    with _dtype_policy("mixed_float16" if config.mixed_precision else None):
        run = _Run(config, run_dir, weights, strategy, placement, log)
        run.fit_phases(extra_callbacks)
        return run.finish(time.monotonic() - started)


class _Run:
    """The state of one train() call; phases share the model, data and directory."""

    def __init__(self, config: TrainConfig, run_dir: RunDirectory, weights, strategy, placement, log):
        self.config, self.run_dir, self.weights_used, self.log = config, run_dir, weights, log
        self.strategy, self.placement, self.service = strategy, placement, config.service()
        distribute.per_replica_batch(config.pipeline.batch_size, placement.num_replicas)
        if config.pipeline.seed is not None:
            keras.utils.set_random_seed(config.pipeline.seed)  # before any weight is created
        sources.check_spec(config.dataset, config.data_dir)  # a typo fails before weights load
        self.backbone = backbones.get(config.backbone)
        with strategy.scope():
            self.base = self.backbone.build_base(config.pipeline.image_size, weights, config.alpha)
        self.fine_tune_index = finetune.resolve_fine_tune_at(self.base, config.fine_tune_at)

        self.source = sources.open_source(config.dataset, config.data_dir)
        self.metadata = sources.describe(
            self.source, train=config.train_split, validation=config.val_split, test=config.test_split
        )
        if self.metadata.num_examples["train"] < config.pipeline.batch_size:
            raise TfpipeError(
                f"--train_split={config.train_split!r} has {self.metadata.num_examples['train']} examples, fewer "
                f"than one batch (--batch_size={config.pipeline.batch_size}); lower --batch_size or widen the split"
            )
        steps = augment.parse(config.augment)
        on_pipeline = config.augment_on == "pipeline"
        # Layers that run in tf.data must not hold distributed variables; those in the model must.
        self.pipeline_augmentation = (
            augment.build(steps, seed=config.pipeline.seed, dtype="float32") if on_pipeline else None
        )
        with strategy.scope():
            in_model = None if on_pipeline else augment.build(steps, seed=config.pipeline.seed, dtype="float32")
            self.classifier = model_lib.build_classifier(
                self.backbone,
                self.base,
                config.pipeline.image_size,
                self.metadata.num_classes,
                dropout=config.dropout,
                augmentation=in_model,
                seed=config.pipeline.seed,
            )
        self.trainable_counts = self._count_trainable()
        self.val_ds = self._dataset(config.val_split, training=False)
        self.clock = callbacks.PhaseClock(run_dir.state.wall_seconds)
        self.last_optimizer = None
        if weights is None and not run_dir.resumed:
            plain = pipeline.build(self.source, config.train_split, config.pipeline, training=False)
            used = finetune.calibrate_batchnorm(
                self.classifier, self.base, (images for images, _ in plain.take(CALIBRATION_BATCHES))
            )
            log(f"Weights none: BatchNorm statistics of the random base estimated from {used} training images")
        run_dir.start(self.classifier)

    def _count_trainable(self) -> dict:
        finetune.freeze(self.base)
        frozen = len(self.classifier.trainable_variables)
        finetune.unfreeze_from(self.base, self.fine_tune_index)
        return {finetune.FEATURE_EXTRACTION: frozen, finetune.FINE_TUNE: len(self.classifier.trainable_variables)}

    def fit_phases(self, extra_callbacks) -> None:
        config = self.config
        for phase in finetune.schedule(
            config.initial_epochs, config.fine_tune_epochs, config.learning_rate, config.fine_tune_lr_factor
        ):
            first = max(self.run_dir.state.completed_epochs, phase.first_epoch)
            if first >= phase.end_epoch:
                continue
            self.log(
                f"Phase {phase.name}: epochs {first + 1}-{phase.end_epoch} at learning rate {phase.learning_rate:g}"
            )
            if phase.name == finetune.FEATURE_EXTRACTION:
                finetune.freeze(self.base)
            else:
                finetune.unfreeze_from(self.base, self.fine_tune_index)
            fast = phase.name == finetune.FEATURE_EXTRACTION and config.uses_fast_feature_extraction
            self.clock.start(phase.name)
            try:
                if fast:
                    self._fit_head_on_features(phase, first, extra_callbacks)
                else:
                    self._fit_end_to_end(phase, first, extra_callbacks)
            finally:
                self.clock.stop()

    def _dataset(self, split: str, *, training: bool, epoch_offset: int = 0):
        """`split` as model.fit takes it under the run's strategy, from the data service if one is set."""

        def make(batch_size, shard):
            return pipeline.build(
                self.source,
                split,
                dataclasses.replace(self.config.pipeline, batch_size=batch_size),
                training=training,
                augmentation=self.pipeline_augmentation if training else None,
                shard=shard,
                epoch_offset=epoch_offset,
                service=self.service,
            )

        return distribute.distributed(self.strategy, make, self.config.pipeline.batch_size)

    def _fit_end_to_end(self, phase, first, extra_callbacks):
        train_ds = self._dataset(self.config.train_split, training=True, epoch_offset=first)
        self._fit(self.classifier, phase, first, train_ds, self.val_ds, extra_callbacks)

    def _fit_head_on_features(self, phase, first, extra_callbacks):
        self.log("Fast feature extraction: running the frozen base once over the training and validation data")
        # Every worker extracts from all the data, locally; the head's fit distributes the features.
        local = [
            pipeline.build(self.source, split, self.config.pipeline, training=False)
            for split in (self.config.train_split, self.config.val_split)
        ]
        seed = self.config.pipeline.seed
        batch = self.config.pipeline.batch_size
        (train_x, train_y), (val_x, val_y) = features.extract(self.classifier, local)
        train_features = features.feature_datasets(train_x, train_y, batch, training=True, seed=seed)
        val_features = features.feature_datasets(val_x, val_y, batch, training=False, seed=seed)
        with self.strategy.scope():  # Keras gives a model the strategy it is created under
            head = model_lib.head_of(self.classifier)
        self._fit(head, phase, first, train_features, val_features, extra_callbacks)

    def _fit(self, model, phase, first, train_ds, val_ds, extra_callbacks):
        with self.strategy.scope():
            optimizer = model_lib.make_optimizer(self.config.optimizer, phase.learning_rate)
            model_lib.compile_classifier(
                model, self.metadata.num_classes, optimizer, jit_compile=self.config.jit_compile
            )
            restored = self.run_dir.restore_optimizer(model.optimizer, model.trainable_variables, phase.name)
        if restored:
            self.log(f"Restored the {phase.name} optimizer state of epoch {self.run_dir.state.completed_epochs}")
        self.last_optimizer = model.optimizer
        stopper = callbacks.StopOnNonFiniteLoss()
        try:
            with _inputs_of_unknown_size():
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    shuffle=False,  # the pipeline shuffles, every epoch
                    initial_epoch=first,
                    epochs=phase.end_epoch,
                    verbose=self.config.verbose,
                    callbacks=[
                        stopper,
                        callbacks.EpochRecorder(self.run_dir, self.classifier, phase.name, self.clock),
                        keras.callbacks.TensorBoard(log_dir=self.run_dir.file("tensorboard")),
                        *extra_callbacks,
                    ],
                )
        finally:
            # Written per phase, not per epoch: the checkpoint keeps the best
            # weights, so a killed run loses nothing and finish() rewrites it.
            self.run_dir.save_best_model(self.classifier, self.run_dir.file(BEST_MODEL))
        if stopper.stopped_at_epoch is not None:
            state = self.run_dir.state
            kept = f"epoch {state.best_epoch} is kept in best.keras" if state.best_epoch else "no epoch finished"
            raise TfpipeError(
                f"the loss became NaN or infinite in epoch {stopper.stopped_at_epoch} ({phase.name}), so training "
                f"stopped; {kept}. Lower --learning_rate (now {phase.learning_rate:g}) or check the data"
            )

    def finish(self, seconds_this_call: float) -> dict:
        config, run_dir, state = self.config, self.run_dir, self.run_dir.state
        if not self.classifier.compiled:
            # Only the head was fit (fast feature extraction), or nothing was left to
            # fit: final.keras gets the optimizer that trained last, state and all.
            with self.strategy.scope():
                optimizer = self.last_optimizer or model_lib.make_optimizer(config.optimizer, config.learning_rate)
                model_lib.compile_classifier(self.classifier, self.metadata.num_classes, optimizer)
        self.classifier.save(run_dir.file(FINAL_MODEL))
        if self.placement.is_chief:
            self.classifier.export(run_dir.file(EXPORT_DIR), verbose=False)
        test_loss = test_accuracy = None
        if config.test_split:
            run_dir.load_best(self.classifier)  # test metrics are the best checkpoint's
            test_ds = self._dataset(config.test_split, training=False)
            with _inputs_of_unknown_size():
                scores = self.classifier.evaluate(test_ds, verbose=0, return_dict=True)
            test_loss, test_accuracy = float(scores["loss"]), float(scores["accuracy"])
        phase_seconds = self.clock.snapshot()
        trained_seconds = sum(phase_seconds.values())
        results = {
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "best_epoch": state.best_epoch,
            "base_layers": len(self.base.layers),
            "trainable_variables": self.trainable_counts,
            "num_classes": self.metadata.num_classes,
            "class_names": list(self.metadata.class_names),
            "weights": config.weights if config.weights != "auto" else _weights_name(self.weights_used),
            "weights_used": _weights_name(self.weights_used),
            "wall_seconds": {
                finetune.FEATURE_EXTRACTION: round(phase_seconds.get(finetune.FEATURE_EXTRACTION, 0.0), 2),
                finetune.FINE_TUNE: round(phase_seconds.get(finetune.FINE_TUNE, 0.0), 2),
                "total": round(max(seconds_this_call, trained_seconds), 2),
            },
            "fine_tune_at": self.fine_tune_index,
            "fast_feature_extraction": config.uses_fast_feature_extraction,
            "dataset": self.metadata.name,
            "examples": self.metadata.num_examples,
            "epochs": len(state.history),
        }
        write_json_atomic(run_dir.file("results.json"), results)
        write_json_atomic(run_dir.file("history.json"), state.history)
        if self.placement.is_chief:
            report.plot_history(state.history, run_dir.file("training_curves.png"))
        return results


def _weights_name(weights) -> str:
    return "none" if weights is None else weights


def _describe_weights(requested: str, weights) -> str:
    if requested == "auto" and weights is None:
        return "none (--weights=auto: the embedded dataset runs offline, so the base starts from random weights)"
    if weights == "imagenet":
        return "imagenet (keras.applications downloads them once into ~/.keras/models)"
    return "none (random initialization)" if weights is None else f"{weights} (loaded by topology)"


@contextlib.contextmanager
def _dtype_policy(name: str | None):
    """Sets Keras' global dtype policy for the models built inside, then restores it."""
    if name is None:
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def _inputs_of_unknown_size():
    """Keras warns "Your input ran out of data" at the end of every input of
    unknown size, which distributed and data-service inputs are: expected here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        yield
