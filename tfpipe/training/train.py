"""A whole fine-tuning run: data, model, the two phases, and everything written to --model_dir.

    results = train(TrainConfig(model_dir="runs/demo", fine_tune_at="100"))

train() is a flat list of stages, each a small unit below. Order of work: the
configuration is checked first (TrainConfig.validate), then the dataset name and
the base's layers (a typo or a bad --fine_tune_at fails before a dataset is
prepared), then the splits and the batch against the prepared data, all before
training. The model directory is resumable: calling train() again with the same
config continues after the last completed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import warnings
from typing import Callable

import keras
import tensorflow as tf

from tfpipe import atomic, memory
from tfpipe.data import balance as balance_lib
from tfpipe.data import order, pipeline, sources
from tfpipe.data import service as service_lib
from tfpipe.errors import TfpipeError
from tfpipe.inference import evaluation, report
from tfpipe.inference.predict import TrainedModel
from tfpipe.models import augment, backbones, trainable
from tfpipe.models import classifier as model_lib
from tfpipe.models import weights as weights_lib
from tfpipe.runs.files import (
    BEST_MODEL,
    EXPORT_DIR,
    FINAL_MODEL,
    PREPROCESSING,
    RESULTS,
    TENSORBOARD_DIR,
    TIME_PLOT,
    TRAINING_CURVES,
)
from tfpipe.runs.state import RunDirectory
from tfpipe.training import (
    activations,
    callbacks,
    distribute,
    features,
    finetune,
    input_wait,
    memory_plan,
    resume,
    timeline,
)
from tfpipe.training.config import SPLIT_FLAGS, TrainConfig, check_train_split_fills_a_batch

__all__ = ["TrainConfig", "train"]

# Above this ratio of largest to smallest class, the run suggests correcting the imbalance.
IMBALANCE_HINT_RATIO = 3
# Batches whose statistics initialize a random base's BatchNorm layers (weights=none).
CALIBRATION_BATCHES = 4


def train(
    config: TrainConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    extra_callbacks: tuple = (),
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or resumes) the two-phase fine-tuning; returns what results.json holds.

    Example::

        import tfpipe

        results = tfpipe.train(tfpipe.TrainConfig(model_dir="runs/pets", dataset="folder:/data/pets"))
        print(results["test_accuracy"], results["input_wait"]["run"])

    Calling it again with the same config resumes the run where it was saved.
    strategy: overrides config.strategy (e.g. a MirroredStrategy over chosen devices).
    extra_callbacks: Keras callbacks added to every fit. log: where the run's lines go.
    """
    started = time.monotonic()
    moments = timeline.Timeline()  # where the first seconds go, from the launch (training.timeline)
    config.validate()
    image_size_line = config.image_size_line()
    config = config.resolved()
    # First: MultiWorkerMirroredStrategy must exist before TensorFlow runs any op.
    strategy = strategy or distribute.make_strategy(config.strategy)
    placement = distribute.Placement.of(strategy)
    run_dir = RunDirectory(_model_dir(config, placement), config.fingerprint(), overwrite=config.overwrite)
    with run_dir, _dtype_policy("mixed_float16" if config.mixed_precision else None):
        dataset = sources.DatasetSpec.parse(config.dataset)
        weights = weights_lib.resolve(
            config.weights,
            backbone=config.backbone,
            alpha=config.alpha,
            dataset=str(dataset),
            offline_dataset=dataset.is_local,
        )
        budget = memory.MemoryBudget.detect(config.memory_budget)
        _log_start(log, [image_size_line, budget.describe()], weights, strategy, placement, run_dir)
        distribute.per_replica_batch(config.pipeline.batch_size, placement.num_replicas)
        if config.pipeline.seed is not None:
            keras.utils.set_random_seed(config.pipeline.seed)  # before any weight is created
        sources.check_spec(dataset, config.data_dir, config.csv)  # a typo fails before weights load
        base = _Base.build(config, weights, strategy)
        moments.mark("base built, weights read")
        data = _RunData.open(config, dataset, strategy, log)
        moments.mark("data opened and counted")
        plan = _plan_memory(config, budget, base, data)
        for line in plan.lines:
            log(line)
        data = data.with_cache(plan.cache)
        _log_classes(log, data)
        _log_dropped(log, data)
        classifier = _build_classifier(config, base, data.metadata.num_classes, strategy)
        moments.mark("classifier built")
        trainable_counts = finetune.trainable_counts(classifier, base.model, base.fine_tune_index)
        if weights.keras_weights is None and not run_dir.resumed:
            _calibrate_random_base(classifier, base.model, data, log)
        run_dir.start(classifier)
        # What predict, evaluate and export read back (inference.predict.run_preprocessing).
        atomic.write_json(run_dir.file(PREPROCESSING), config.pipeline.preprocessing.record())
        every = _checkpoint_every(config, placement, log)
        fitter = _PhaseFitter(config, run_dir, classifier, base, data, plan, strategy, every, moments, log)
        fitter.fit_all(extra_callbacks)
        _save_models(classifier, fitter.last_optimizer, config, data, run_dir, placement, strategy)
        first_epoch = moments.record(_first_epoch_end(run_dir.state.history, moments))
        if first_epoch:
            log(timeline.Timeline.line(first_epoch))
        test_scores = _evaluate_test(classifier, config, data, run_dir, placement, log)
        results = results_record(
            config,
            run_dir.state,
            base,
            data.metadata,
            data.balance,
            trainable_counts,
            weights,
            test_scores,
            fitter.clock.snapshot(),
            time.monotonic() - started,
            plan,
            {
                "every": every.describe(),
                "saves": sum(saves for saves, _ in fitter.saves),
                "seconds": round(sum(seconds for _, seconds in fitter.saves), 3),
            },
            first_epoch,
        )
        _write_results(results, run_dir, placement)
        return results


def _checkpoint_every(config: TrainConfig, placement, log) -> resume.Every:
    """When the run saves inside an epoch (training.resume), and a line when it cannot as asked."""
    every = resume.Every.parse(config.checkpoint_every)
    if every.seconds is not None and placement.task:
        # Workers must save at the same step; clocks do not agree on it (nor does Keras' BackupAndRestore).
        log(
            f"Checkpoints at epoch ends only: a multi-worker run saves inside an epoch by steps "
            f"(--checkpoint_every=NNNsteps), not every {every.seconds:g} s"
        )
        return resume.Every()
    if every.inside_epochs and config.service() is not None:
        log("Checkpoints at epoch ends only: the tf.data service cannot restore a position inside an epoch")
        return resume.Every()
    return every


def _first_epoch_end(history: list[dict], moments) -> float | None:
    """When this call's first epoch ended (Unix time), or None if it trained none."""
    launched = moments.marks[0][1]
    return min((r["finished_at"] for r in history if r.get("finished_at", 0) >= launched), default=None)


def _model_dir(config: TrainConfig, placement) -> str:
    if placement.is_chief:
        return config.model_dir
    # Other workers compute the same model; their files go aside, as Keras advises.
    return os.path.join(config.model_dir, "workers", placement.task)


def _log_start(log, settings: list[str], weights, strategy, placement, run_dir) -> None:
    log(f"Weights: {weights.description}")
    for line in settings:  # the image size and the memory budget, and why
        log(line)
    if placement.num_replicas > 1 or placement.task:
        log(
            f"Strategy: {type(strategy).__name__}, {placement.num_replicas} replicas"
            + (f"; this is {placement.task}{' (chief)' if placement.is_chief else ''}" if placement.task else "")
        )
    if run_dir.resumed:
        log(f"Resuming {run_dir.path} after epoch {run_dir.state.completed_epochs}")


def _log_classes(log, data) -> None:
    counts, balance = data.balance.counts, data.balance
    if balance.class_weight != balance_lib.NONE or balance.oversamples:
        log(
            f"Training split: {min(counts)}-{max(counts)} examples per class; --class_weight={balance.class_weight}, "
            f"--balance={balance.balance}: {balance.epoch_examples(sum(counts))} examples per epoch"
        )
    elif max(counts) > IMBALANCE_HINT_RATIO * max(min(counts), 1):
        log(
            f"Training split: {min(counts)}-{max(counts)} examples per class; rare classes may be ignored: "
            "try --class_weight=balanced or --balance=oversample"
        )


def _log_dropped(log, data) -> None:
    examples, batch = data.epoch_examples(data.config.train_split), data.config.pipeline.batch_size
    dropped = distribute.dropped_per_epoch(examples, batch)
    if dropped:
        log(
            f"Training: {examples // batch} batches of {batch} per epoch; the last {dropped} of the {examples} "
            "examples in each epoch's shuffled order are left out (drop_remainder)"
        )


@dataclasses.dataclass(frozen=True)
class _Base:
    """The pretrained base and where fine-tuning starts in it."""

    backbone: backbones.Backbone
    model: keras.Model
    fine_tune_index: int

    @classmethod
    def build(cls, config: TrainConfig, weights: weights_lib.Weights, strategy) -> _Base:
        backbone = backbones.get(config.backbone)
        with strategy.scope():
            model = backbone.build_base(config.pipeline.image_size, weights.keras_weights, config.alpha)
        return cls(backbone, model, trainable.resolve_fine_tune_at(model, config.fine_tune_at))


@dataclasses.dataclass(frozen=True)
class _RunData:
    """The run's dataset, opened and checked, and the tf.data pipelines made from it.

    Augmentation placed in the pipeline lives here, built outside the strategy
    scope: layers that run in tf.data must not hold distributed variables.
    """

    config: TrainConfig
    source: sources.Source
    metadata: sources.DatasetMetadata
    strategy: tf.distribute.Strategy
    augmentation: keras.layers.Layer | None
    balance: balance_lib.ClassBalance  # the training split's class counts, and how they are corrected
    log: Callable[[str], None]
    pipelines: dict = dataclasses.field(default_factory=dict)  # (split, batch, shard) -> Pipeline, one cache each

    @classmethod
    def open(cls, config: TrainConfig, dataset: sources.DatasetSpec, strategy, log) -> _RunData:
        source = sources.open_source(dataset, config.data_dir, config.csv)
        metadata = sources.describe(
            source,
            flags=SPLIT_FLAGS,
            train=config.train_split,
            validation=config.val_split,
            test=config.test_split,
        )
        model_lib.check_num_classes(metadata.num_classes, source.name)
        check_train_split_fills_a_batch(metadata, config.train_split, config.pipeline.batch_size)
        augmentation = None
        if config.augment_on == "pipeline":
            augmentation = augment.build(augment.parse(config.augment), seed=config.pipeline.seed, dtype="float32")
        counts = tuple(source.class_counts(config.train_split))
        balance = balance_lib.ClassBalance(counts, config.class_weight, config.balance)
        return cls(config, source, metadata, strategy, augmentation, balance, log, {})

    def dataset(self, split: str, *, training: bool, seed: int, epochs: tuple[int, int, int] | None = None):
        """`split` as model.fit takes it under the run's strategy, from the data service if one is set.

        training: a stream of epochs (first, end, start_step) in their orders (seed, epoch);
        through the data service, one epoch that the service reshuffles at each pass."""
        service = self.config.service()

        def make_epochs(batch_size, shard):
            made = self._pipeline(split, batch_size, shard, service, seed)
            if not training:
                return lambda epoch, start: made.batches(training=False)
            # Through the service the pipeline ignores the epoch and step: the service reshuffles each pass.
            options = dict(augmentation=self.augmentation, balance=self.balance)
            return lambda epoch, start: made.batches(training=True, epoch=epoch, start_step=start, **options)

        return distribute.distributed(
            self.strategy,
            make_epochs,
            self.config.pipeline.batch_size,
            examples=self.epoch_examples(split) if training else self.source.count(split),
            training=training,
            epochs=epochs if training and service is None else None,
        )

    def _pipeline(self, split, batch_size, shard, service, seed) -> pipeline.Pipeline:
        """The split's pipeline for this batch and shard, made (its cache filled) once per run: each
        phase's datasets read the same cache."""
        key = (split, batch_size, shard)
        if key not in self.pipelines:
            self.pipelines[key] = pipeline.Pipeline(
                self.source,
                split,
                dataclasses.replace(self.config.pipeline, batch_size=batch_size),
                shard=shard,
                service=service,
                seed=seed,
                log=self.log,
            )
        return self.pipelines[key]

    def steps(self, split: str) -> int:
        """Training steps of an epoch of `split` (the last partial global batch dropped)."""
        return distribute.steps_per_epoch(self.epoch_examples(split), self.config.pipeline.batch_size, training=True)

    def epoch_examples(self, split: str) -> int:
        """Examples a training epoch of `split` serves (oversampling repeats some)."""
        return self.balance.epoch_examples(self.source.count(split))

    def with_cache(self, cache: str) -> _RunData:
        """The same data, its pipelines caching where the memory plan says (memory, none, a store)."""
        pipeline_config = dataclasses.replace(self.config.pipeline, cache=cache)
        return dataclasses.replace(self, config=dataclasses.replace(self.config, pipeline=pipeline_config), pipelines={})

    def local(self, split: str) -> tf.data.Dataset:
        """`split` in order, on this process alone: no strategy, no service, no shuffle. Read once
        (the frozen passes, BatchNorm calibration, the test evaluation), so never cached, its decoded
        images would only add to the run's peak memory, and untuned (pipeline.pipeline_options)."""
        once = dataclasses.replace(self.config.pipeline, cache=pipeline.CACHE_NONE)
        return pipeline.build(self.source, split, once, training=False, tuned=False)

    def local_train_and_validation(self) -> tuple[list[tf.data.Dataset], list[int]]:
        """The training and validation splits, each `local`, and their example counts: what a single
        pass of the frozen layers reads."""
        splits = (self.config.train_split, self.config.val_split)
        return [self.local(split) for split in splits], [self.source.count(split) for split in splits]


def _plan_memory(config: TrainConfig, budget: memory.MemoryBudget, base: _Base, data: _RunData):
    """Where the run keeps its decoded images, features and activations (training.memory_plan)."""
    return memory_plan.plan(
        config,
        budget,
        examples=sum(data.source.count(split) for split in (config.train_split, config.val_split)),
        encoded_image_bytes=data.source.mean_encoded_bytes(),
        feature_size=int(base.model.output.shape[-1]),
        base=base.model,
        fine_tune_index=base.fine_tune_index,
    )


def _build_classifier(config: TrainConfig, base: _Base, num_classes: int, strategy) -> model_lib.TransferClassifier:
    with strategy.scope():
        in_model = None
        if config.augment_on != "pipeline":
            in_model = augment.build(augment.parse(config.augment), seed=config.pipeline.seed, dtype="float32")
        return model_lib.build_classifier(
            base.backbone,
            base.model,
            config.pipeline.image_size,
            num_classes,
            dropout=config.dropout,
            augmentation=in_model,
            seed=config.pipeline.seed,
        )


def _calibrate_random_base(classifier, base: keras.Model, data: _RunData, log) -> None:
    batches = (images for images, _ in data.local(data.config.train_split).take(CALIBRATION_BATCHES))
    used = finetune.calibrate_batchnorm(classifier, base, batches)
    log(f"Weights none: BatchNorm statistics of the random base estimated from {used} training images")


class _PhaseFitter:
    """Fits the schedule's phases in turn, each from where the run directory left off."""

    def __init__(
        self, config, run_dir: RunDirectory, classifier, base: _Base, data: _RunData, plan, strategy, every, moments, log
    ):
        self.config, self.run_dir, self.classifier, self.base = config, run_dir, classifier, base
        self.data, self.plan, self.strategy, self.every, self.log = data, plan, strategy, every, log
        self.moments = moments  # training.timeline: the first phase marks when its data is ready
        self.clock = callbacks.PhaseClock(run_dir.state.wall_seconds)
        self.last_optimizer = None
        # Every epoch's order: data.order. An unseeded run's drawn seed is kept in its state.
        self.seed = run_dir.data_seed(order.seed_or_draw(config.pipeline.seed))
        self.saves = []  # (saves, seconds) of each fit's StepCheckpoint
        self._val_ds = None  # made by the first end-to-end phase, and kept (its cache fills once)

    def fit_all(self, extra_callbacks) -> None:
        with service_lib.watching(self.config.service()):
            self._fit_phases(extra_callbacks)

    def _fit_phases(self, extra_callbacks) -> None:
        config = self.config
        stopped = self.run_dir.state.stopped_early
        for name in (finetune.FEATURE_EXTRACTION, finetune.FINE_TUNE):
            # Recomputed per phase: a phase that stops early moves the next one's epochs.
            phases = finetune.schedule(
                config.initial_epochs,
                config.fine_tune_epochs,
                config.learning_rate,
                config.fine_tune_lr_factor,
                stopped,
            )
            phase = next((p for p in phases if p.name == name), None)
            if phase is None or name in stopped:
                continue
            first = max(self.run_dir.state.completed_epochs, phase.first_epoch)
            if first >= phase.end_epoch:
                continue
            self.log(
                f"Phase {phase.name}: epochs {first + 1}-{phase.end_epoch} at learning rate {phase.learning_rate:g}"
            )
            if phase.name == finetune.FEATURE_EXTRACTION:
                trainable.freeze(self.base.model)
            else:
                trainable.unfreeze_from(self.base.model, self.base.fine_tune_index)
            fast = phase.name == finetune.FEATURE_EXTRACTION and self.plan.fast_features
            at = self.plan.boundary if phase.name == finetune.FINE_TUNE else None
            self.clock.start(phase.name)
            try:
                if fast:
                    self._fit_head_on_features(phase, first, extra_callbacks)
                elif at is not None:
                    self._fit_top_on_activations(phase, first, extra_callbacks, at)
                else:
                    self._fit_end_to_end(phase, first, extra_callbacks)
            finally:
                self.clock.stop()
            if name in stopped:
                self.log(
                    f"Phase {name} stopped at epoch {stopped[name]}: val_loss did not improve for "
                    f"{config.early_stopping} epochs (--early_stopping={config.early_stopping})"
                )

    def _fit_end_to_end(self, phase, first, extra_callbacks):
        split = self.config.train_split

        def train_stream(epochs):
            return self.data.dataset(split, training=True, seed=self.seed, epochs=epochs)

        if self._val_ds is None:
            self._val_ds = self.data.dataset(self.config.val_split, training=False, seed=self.seed)
            self.moments.mark("validation data ready")
        steps = None if self.config.service() is not None else self.data.steps(split)
        self._fit(self.classifier, phase, first, train_stream, self._val_ds, steps, extra_callbacks)

    def _fit_head_on_features(self, phase, first, extra_callbacks):
        self.log("Fast feature extraction: running the frozen base once over the training and validation data")
        # Every worker extracts from all the data, locally; the head's fit distributes the features.
        local, counts = self.data.local_train_and_validation()
        (train_x, train_y), (val_x, val_y) = features.extract(self.classifier, local, counts)
        self.moments.mark("frozen base's pass over the images")
        with self.strategy.scope():  # Keras gives a model the strategy it is created under
            head = model_lib.head_of(self.classifier)
        self._fit_on_arrays(head, phase, first, (train_x, train_y), (val_x, val_y), extra_callbacks)

    def _fit_on_arrays(self, model, phase, first, train, val, extra_callbacks):
        """Fits `model` on stored features or activations: (x, labels) pairs, x an array or a tuple."""
        (train_x, train_y), (val_x, val_y) = train, val
        steps = distribute.steps_per_epoch(
            self.data.balance.epoch_examples(len(train_y)), self.config.pipeline.batch_size, training=True
        )

        def train_stream(epochs):
            return self._array_batches(train_x, train_y, training=True, epochs=epochs)

        val_ds = self._array_batches(val_x, val_y, training=False)
        self._fit(model, phase, first, train_stream, val_ds, steps, extra_callbacks)

    def _array_batches(self, x, y, *, training: bool, epochs=None):
        """Stored features or activations `x` (an array or a tuple of arrays) with labels `y`, batched
        under the run's strategy as the pipeline batches images (each epoch in its order, balanced,
        when training)."""

        def make_epochs(batch_size, shard):
            def one_epoch(epoch, start):
                return features.feature_datasets(
                    x,
                    y,
                    batch_size,
                    training=training,
                    seed=self.seed,
                    balance=self.data.balance,
                    shard=shard,
                    epoch=epoch,
                    start_step=start,
                )

            return one_epoch

        examples = self.data.balance.epoch_examples(len(y)) if training else len(y)
        return distribute.distributed(
            self.strategy,
            make_epochs,
            self.config.pipeline.batch_size,
            examples=examples,
            training=training,
            epochs=epochs if training else None,
        )

    def _plateau_stop(self, phase) -> list:
        patience = self.config.early_stopping
        return [callbacks.StopAtPlateau(self.run_dir, phase.name, patience)] if patience else []

    def _fit_top_on_activations(self, phase, first, extra_callbacks, at):
        local, counts = self.data.local_train_and_validation()
        with self.strategy.scope():
            bottom, top = activations.split_classifier(self.classifier, self.base.model, at)
        (train_x, train_y), (val_x, val_y) = activations.extract(bottom, local, counts)
        self.moments.mark("frozen layers' pass over the images")
        single = len(at.tensors) == 1
        train, val = (train_x[0] if single else train_x, train_y), (val_x[0] if single else val_x, val_y)
        self._fit_on_arrays(top, phase, first, train, val, extra_callbacks)

    def _fit(self, model, phase, first, train_stream, val_ds, steps, extra_callbacks):
        """Fits `model` through the rest of `phase` from epoch `first`: train_stream((first, end, start_step))
        gives the training batches; steps: an epoch's steps (None: the data service's epochs,
        whose position inside an epoch cannot be restored)."""
        num_classes = self.data.metadata.num_classes
        with self.strategy.scope():
            optimizer = model_lib.make_optimizer(self.config.optimizer, phase.learning_rate)
            model_lib.compile_classifier(model, num_classes, optimizer, jit_compile=self.config.jit_compile)
            restored = self.run_dir.restore_optimizer(model.optimizer, model.trainable_variables, phase.name)
        if restored:
            self.log(f"Restored the {phase.name} optimizer state of epoch {self.run_dir.state.completed_epochs}")
        self.last_optimizer = model.optimizer
        stopper = callbacks.StopOnNonFiniteLoss()
        savers = []
        try:
            with _inputs_of_unknown_size():
                savers = resume.fit_resumable(
                    model,
                    run_dir=self.run_dir,
                    checkpointed=self.classifier,
                    phase=phase.name,
                    first=first,
                    end=phase.end_epoch,
                    steps=steps,
                    train_stream=train_stream,
                    validation=val_ds,
                    every=self.every,
                    clock=self.clock,
                    callbacks=[
                        stopper,
                        # Before the recorder and TensorBoard: it adds the epoch's input wait to the logs.
                        *input_wait.measuring(model, self.strategy, jit_compile=self.config.jit_compile, log=self.log),
                        callbacks.EpochRecorder(self.run_dir, self.classifier, phase.name, self.clock),
                        *self._plateau_stop(phase),
                        keras.callbacks.TensorBoard(log_dir=self.run_dir.file(TENSORBOARD_DIR)),
                        *extra_callbacks,
                    ],
                    verbose=self.config.verbose,
                    log=self.log,
                )
        finally:
            # Written per phase, not per epoch: the checkpoint keeps the best
            # weights, so a killed run loses nothing and the end of the run rewrites it.
            self.run_dir.best.save_model(self.classifier, self.run_dir.file(BEST_MODEL))
            self.saves += [(saver.saves, saver.save_seconds) for saver in savers]
        if stopper.stopped_at_epoch is not None:
            state = self.run_dir.state
            kept = f"epoch {state.best_epoch} is kept in best.keras" if state.best_epoch else "no epoch finished"
            raise TfpipeError(
                f"the loss became NaN or infinite in epoch {stopper.stopped_at_epoch} ({phase.name}), so training "
                f"stopped; {kept}. Lower --learning_rate (now {phase.learning_rate:g}) or check the data"
            )


def _save_models(classifier, last_optimizer, config, data, run_dir, placement, strategy) -> None:
    """final.keras (with the optimizer that trained last) and, on the chief, the SavedModel export if asked for."""
    if not classifier.compiled:
        # Only the head was fit (fast feature extraction), or nothing was left to
        # fit: final.keras gets the optimizer that trained last, state and all.
        with strategy.scope():
            optimizer = last_optimizer or model_lib.make_optimizer(config.optimizer, config.learning_rate)
            model_lib.compile_classifier(classifier, data.metadata.num_classes, optimizer)
    with atomic.replacing(run_dir.file(FINAL_MODEL)) as temporary:
        classifier.save(temporary)
    if placement.is_chief and config.export:
        with atomic.replacing(run_dir.file(EXPORT_DIR), what="the SavedModel export") as temporary:
            classifier.export(temporary, verbose=False)


def _evaluate_test(classifier, config, data: _RunData, run_dir: RunDirectory, placement, log) -> dict | None:
    """The best checkpoint on the test split: its loss and accuracy for results.json, and the
    evaluation report in evaluation/ (chief only); None without a test split."""
    if not config.test_split:
        return None
    run_dir.best.load_into(classifier)
    trained = TrainedModel(
        classifier, tuple(data.metadata.class_names), config.pipeline.preprocessing, run_dir.file(BEST_MODEL)
    )
    result, mistakes = evaluation.evaluate(trained, data.local(config.test_split), config.test_split)
    if placement.is_chief:
        evaluation.write(run_dir.path, result, mistakes)
    log(evaluation.summary(result))
    return {"loss": result["loss"], "accuracy": result["accuracy"]}


def results_record(
    config,
    state,
    base: _Base,
    metadata,
    balance,
    trainable_counts,
    weights,
    test_scores,
    phase_seconds,
    seconds_this_call,
    plan: memory_plan.MemoryPlan,
    checkpoints: dict | None = None,
    first_epoch: dict | None = None,
) -> dict:
    """What results.json holds, from what the run did: no side effects."""
    trained_seconds = sum(phase_seconds.values())
    return {
        "test_loss": test_scores["loss"] if test_scores else None,
        "test_accuracy": test_scores["accuracy"] if test_scores else None,
        "best_epoch": state.best_epoch,
        "base_layers": len(base.model.layers),
        "trainable_variables": trainable_counts,
        "num_classes": metadata.num_classes,
        "class_names": list(metadata.class_names),
        "weights": config.weights if config.weights != weights_lib.AUTO else weights.name,
        "weights_used": weights.name,
        "weights_source": weights.source,  # a package's weights: package, version, file, sha256
        "wall_seconds": {
            finetune.FEATURE_EXTRACTION: round(phase_seconds.get(finetune.FEATURE_EXTRACTION, 0.0), 2),
            finetune.FINE_TUNE: round(phase_seconds.get(finetune.FINE_TUNE, 0.0), 2),
            "total": round(max(seconds_this_call, trained_seconds), 2),
        },
        "image_size": config.pipeline.image_size,
        "fine_tune_at": base.fine_tune_index,
        "fast_feature_extraction": plan.fast_features,
        # where phase 2 cached activations, or None (end to end)
        "cached_fine_tuning": plan.boundary.describe() if plan.boundary is not None else None,
        "memory_budget_bytes": plan.budget.bytes,
        "cache": plan.cache,  # where the decoded images were kept: memory, none or a store's folder
        "checkpoints_inside_epochs": checkpoints,
        "first_epoch_seconds": first_epoch,  # from the launch to this call's first epoch's end (training.timeline)
        # The share of training time without a batch to work on (training.input_wait): per phase and all.
        "input_wait": {
            **{
                name: input_wait.share([r for r in state.history if r["phase"] == name])
                for name in (finetune.FEATURE_EXTRACTION, finetune.FINE_TUNE)
            },
            "run": input_wait.share(state.history),
        },
        "stopped_early": dict(state.stopped_early),  # phase -> epoch, with --early_stopping
        "dataset": metadata.name,
        "examples": metadata.num_examples,
        **balance.record(metadata.class_names),
        "epochs": len(state.history),
    }


def _write_results(results: dict, run_dir: RunDirectory, placement) -> None:
    atomic.write_json(run_dir.file(RESULTS), results)  # history.json is written with every epoch's checkpoint
    if placement.is_chief:
        with atomic.replacing(run_dir.file(TRAINING_CURVES)) as temporary:
            report.plot_history(run_dir.state.history, temporary, marked_phase=finetune.FINE_TUNE)
        if any(record.get("training_seconds") for record in run_dir.state.history):
            with atomic.replacing(run_dir.file(TIME_PLOT)) as temporary:
                report.plot_time(run_dir.state.history, temporary)


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
