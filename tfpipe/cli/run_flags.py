"""Flags of the tools that write a --model_dir run (train, pretrain): defined once here."""

from __future__ import annotations

from absl import flags

from tfpipe.training import resume

flags.DEFINE_string(
    "checkpoint_every",
    resume.DEFAULT_EVERY,
    "Save the run inside epochs this often, so a killed run resumes at the step it saved, in the epoch's "
    "order: a duration (30s, 10m, 1h), a step count (500steps), or 'epoch' for epoch ends only.",
)
