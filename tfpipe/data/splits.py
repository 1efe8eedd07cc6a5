"""Split strings in tfds slicing syntax, for every source.

tfds sources resolve them natively; folder sources resolve them here with the
same tfds parser and rounding, so `train[:80%]` selects the same share of a
folder as of a tfds dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

import tensorflow_datasets as tfds

from tfpipe.errors import TfpipeError

SPLITS_HELP = "see https://www.tensorflow.org/datasets/splits, e.g. 'train[:80%]', 'train[100:200]', 'train+validation'"


@dataclasses.dataclass(frozen=True)
class Slice:
    """Examples [start, stop) of the named split."""

    split: str
    start: int
    stop: int


@dataclasses.dataclass(frozen=True)
class _SplitSize:
    # The two fields tfds' ReadInstruction.to_absolute reads from a SplitInfo.
    num_examples: int

    @property
    def shard_lengths(self):
        return [self.num_examples]


def parse(spec: str, *, flag: str = "split") -> tfds.core.ReadInstruction:
    """Checks the syntax of a split string; raises TfpipeError when it is malformed."""
    try:
        return tfds.core.ReadInstruction.from_spec(spec)
    except (ValueError, NotImplementedError) as error:
        raise TfpipeError(f"--{flag}={spec!r} is not a valid split: {_first_line(error)}; {SPLITS_HELP}") from None


def resolve(spec: str, sizes: Mapping[str, int], *, flag: str = "split") -> list[Slice]:
    """The absolute slices that `spec` selects from splits of the given sizes."""
    instruction = parse(spec, flag=flag)
    try:
        absolute = instruction.to_absolute({name: _SplitSize(count) for name, count in sizes.items()})
    except (ValueError, KeyError) as error:
        raise TfpipeError(f"--{flag}={spec!r} does not fit this dataset: {_first_line(error)}") from None
    # tfds writes an open end as None.
    return [
        Slice(part.splitname, part.from_ or 0, sizes[part.splitname] if part.to is None else part.to)
        for part in absolute
    ]


def count(slices: list[Slice]) -> int:
    return sum(max(0, part.stop - part.start) for part in slices)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    # tfds re-raises with its own prefix line first; the last line holds the reason.
    reason = lines[-1].strip("'\"") if lines else type(error).__name__
    return reason.split(" See format at ")[0].rstrip(".")
