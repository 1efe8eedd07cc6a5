"""Flags that name the model: the base, its width and where fine-tuning starts (train, bench_input)."""

from __future__ import annotations

from absl import flags

from tfpipe.models import backbones
from tfpipe.training.config import TrainConfig

_DEFAULTS = TrainConfig(model_dir="")  # every flag's default is the library's

flags.DEFINE_enum("backbone", _DEFAULTS.backbone, list(backbones.BACKBONES), "Pretrained base.")
flags.DEFINE_float("alpha", _DEFAULTS.alpha, "MobileNetV2 width multiplier.")
flags.DEFINE_string(
    "fine_tune_at", _DEFAULTS.fine_tune_at, "First base layer to fine-tune: an index (0: whole base) or a layer name."
)
