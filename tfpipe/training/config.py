"""TrainConfig: every setting of a fine-tuning run, and the checks that need no data.

The command-line layer fills it from flags; tests and other programs build it
directly. validate() runs the checks that cost nothing (flag values, split
syntax, backbone and image size, augmentation, strategy, data service), so a
typo fails before TensorFlow builds a model or a dataset is prepared.
"""

from __future__ import annotations

import dataclasses
import json
import math

from tfpipe import memory
from tfpipe.data import balance, csv_labels, pipeline, sources, splits
from tfpipe.data import service as service_lib
from tfpipe.errors import TfpipeError
from tfpipe.models import augment, backbones
from tfpipe.models import classifier as model_lib
from tfpipe.training import distribute, resume

# Each split's role -> the setting (and flag) that names it, for messages about it.
SPLIT_FLAGS = {"train": "train_split", "validation": "val_split", "test": "test_split"}


def check_train_split_fills_a_batch(metadata: sources.DatasetMetadata, train_split: str, batch_size: int) -> None:
    """TfpipeError, before any training, when the training split has fewer examples than one batch
    (drop_remainder would leave an epoch empty); train and pretrain share it."""
    examples = metadata.num_examples["train"]
    if examples < batch_size:
        raise TfpipeError(
            f"--train_split={train_split!r} has {examples} examples, fewer than one batch "
            f"(--batch_size={batch_size}); lower --batch_size or widen the split"
        )


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model_dir: str
    dataset: str = sources.DEFAULT_DATASET
    data_dir: str | None = None
    csv: csv_labels.CsvOptions = csv_labels.CsvOptions()  # how to read a csv: dataset
    train_split: str = "train[:80%]"
    val_split: str = "train[80%:90%]"
    test_split: str = "train[90%:]"
    pipeline: pipeline.PipelineConfig = pipeline.PipelineConfig()
    augment: str = augment.DEFAULT_AUGMENT
    augment_on: str = "model"
    backbone: str = "efficientnet_lite0"
    alpha: float = 1.0  # MobileNetV2's width multiplier; 1.0 for the others
    weights: str = "auto"
    dropout: float = 0.2
    fine_tune_at: str = "100"
    initial_epochs: int = 10
    fine_tune_epochs: int = 10
    # The head's rate. The tutorial's 1e-4 suits its 630 phase-1 steps; on a few hundred images
    # (100 steps) it left the head short of converging (BUILD_NOTES.md, "Learning rate").
    learning_rate: float = 1e-3
    fine_tune_lr_factor: float = 0.1
    # Stop a phase after this many epochs without a lower val_loss (Keras' EarlyStopping); 0: off.
    early_stopping: int = 0
    class_weight: str = balance.NONE  # balance.CLASS_WEIGHTS
    balance: str = balance.NONE  # balance.BALANCES
    optimizer: str = "rmsprop"
    mixed_precision: bool = False
    jit_compile: bool = False
    fast_feature_extraction: bool = True
    cached_fine_tuning: bool = True  # phase 2 on the frozen bottom's cached activations, when nothing random runs
    strategy: str = "auto"
    data_service: str | None = None  # grpc://HOST:PORT of a tf.data service dispatcher
    data_service_sharding: str = "off"
    data_service_timeout: float = service_lib.STALL_SECONDS
    # How much memory the run's data may hold, e.g. "8GB"; None: the process's memory less a
    # margin (tfpipe.memory). Where the data is kept, not what is computed: not fingerprinted.
    memory_budget: str | None = None
    # When to save inside an epoch (training.resume): "10m", "500steps", or "epoch" for epoch ends only.
    checkpoint_every: str = resume.DEFAULT_EVERY
    overwrite: bool = False
    export: bool = True  # write export/, the SavedModel (6-7 s on 2 CPU cores, tracing it)
    verbose: int | str = "auto"

    def fingerprint(self) -> dict:
        """What decides the run's result: a model_dir only resumes a run with the same values."""
        # Where a run computes (devices, workers, the data service) is not part of
        # what it computes: a run can resume on other hardware.
        ignored = {
            "model_dir",
            "data_dir",
            "overwrite",
            "export",
            "verbose",
            "pipeline",
            "strategy",
            "data_service",
            "data_service_sharding",
            "data_service_timeout",
            "memory_budget",
            "checkpoint_every",
        }
        values = {k: v for k, v in dataclasses.asdict(self).items() if k not in ignored}
        values.update({f"pipeline.{k}": v for k, v in dataclasses.asdict(self.pipeline).items() if k != "cache"})
        return json.loads(json.dumps(values))  # as it reads back from state.json

    def validate(self) -> None:
        for flag in ("initial_epochs", "fine_tune_epochs"):
            if getattr(self, flag) < 0:
                raise TfpipeError(f"--{flag}={getattr(self, flag)} is negative; give 0 or more epochs")
        if self.early_stopping < 0:
            raise TfpipeError(f"--early_stopping={self.early_stopping} is negative; give a patience in epochs, or 0")
        if self.initial_epochs + self.fine_tune_epochs == 0:
            raise TfpipeError("--initial_epochs and --fine_tune_epochs are both 0: there is nothing to train")
        for flag in ("learning_rate", "fine_tune_lr_factor"):
            value = getattr(self, flag)
            if not (value > 0 and math.isfinite(value)):
                raise TfpipeError(f"--{flag}={value} must be a positive number")
        if not 0 <= self.dropout < 1:
            raise TfpipeError(f"--dropout={self.dropout} must be in [0, 1)")
        balance.check(self.class_weight, self.balance)
        if self.optimizer not in model_lib.OPTIMIZERS:
            raise TfpipeError(f"--optimizer={self.optimizer!r}: use one of {', '.join(model_lib.OPTIMIZERS)}")
        if not self.val_split:
            raise TfpipeError("--val_split is empty: the best checkpoint is chosen on the validation split")
        for flag in ("train_split", "val_split", "test_split"):
            if getattr(self, flag):
                splits.parse(getattr(self, flag), flag=flag)
        backbones.get(self.backbone).check(self.image_size, self.alpha)
        steps = augment.parse(self.augment)
        augment.check_placement(self.augment_on, data_service=self.data_service is not None)
        if self.jit_compile and self.augment_on == "model" and any(name == "rotation" for name, _ in steps):
            raise TfpipeError(
                "--jit_compile with rotation in the model fails: RandomRotation has no XLA kernel in TF 2.21; "
                "use --augment_on=pipeline or drop rotation from --augment"
            )
        self.pipeline.check_cache_folder()
        if self.memory_budget is not None:
            memory.parse_size(self.memory_budget)
        resume.Every.parse(self.checkpoint_every)
        distribute.check_strategy(self.strategy)
        self.service()

    @property
    def image_size(self) -> int:
        """--image_size, or the backbone's own when it is unset."""
        return backbones.get(self.backbone).image_size(self.pipeline.image_size)[0]

    def image_size_line(self) -> str:
        """The run's line on its image size: which, and why."""
        return backbones.get(self.backbone).image_size(self.pipeline.image_size)[1]

    def resolved(self) -> TrainConfig:
        """This config at its image size (the backbone's own when unset): what the run's pipelines,
        model and fingerprint use, so a resumed run matches however the size was given."""
        return dataclasses.replace(self, pipeline=self.pipeline.sized(self.image_size))

    def service(self) -> service_lib.DataService | None:
        return service_lib.optional_service(self.data_service, self.data_service_sharding, self.data_service_timeout)

    @property
    def uses_fast_feature_extraction(self) -> bool:
        return self.fast_feature_extraction and not augment.parse(self.augment) and self.initial_epochs > 0

    @property
    def may_cache_fine_tuning(self) -> bool:
        """Phase 2 may run on cached activations (training.activations): asked for, with no
        augmentation; whether the boundary and memory allow it is decided with the model."""
        return self.cached_fine_tuning and not augment.parse(self.augment) and self.fine_tune_epochs > 0
