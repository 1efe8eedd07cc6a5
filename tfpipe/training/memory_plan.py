"""Where a run keeps what it stores, decided before anything is allocated, against one budget.

A run stores, depending on its phases (tfpipe.memory has the budget):

  decoded images   the training and validation splits, for the phases that run end to end
                   (--cache: in memory when they fit, else a decoded store on disk);
  stored features  phase 1's pooled features, with fast feature extraction;
  activations      phase 2's activations at the fine-tune boundary, with cached fine-tuning.

The decoded images live through the run; the features and the activations each live through
their own phase only (the features are released before the activations are computed), so each
of them is checked against what the images leave. A store that does not fit gives way, with a
line saying why: features and activations to end-to-end training of their phase (which then
needs the decoded images), the image cache to the decoded store on disk.

Peaks, measured in BUILD_NOTES.md ("The memory plan"): stored features and activations at
STORED_PEAK times their bytes (arrays allocated once and filled, then read by index:
training.features), besides the frozen forward pass of the extraction, which the budget's
margin covers; the image cache at pipeline.MEMORY_CACHE_PEAK times its bytes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tfpipe import memory
from tfpipe.data import pipeline, sources
from tfpipe.training import activations

# Resident over the stored bytes: 1.28x after extraction, 1.52x after a training epoch on them
# (EfficientNet-Lite0's activations at layer 100, 224 px, 3,000 images: 377 MiB).
STORED_PEAK = 1.5


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    budget: memory.MemoryBudget
    cache: str  # the pipelines' cache: memory, none, or a store folder
    fast_features: bool  # phase 1 on stored features
    boundary: activations.Boundary | None  # phase 2 on activations stored there; None: end to end
    lines: tuple[str, ...]  # what the run says of it, in order (the budget's own line is the caller's)


def plan(
    config,
    budget: memory.MemoryBudget,
    *,
    examples: int,
    encoded_image_bytes: float,
    feature_size: int,
    base,
    fine_tune_index: int,
) -> MemoryPlan:
    """The plan for a run of `config` (a resolved TrainConfig) on `examples` training and validation
    images of `encoded_image_bytes` each on average (Source.mean_encoded_bytes), whose base gives
    `feature_size` features and fine-tunes from `fine_tune_index`."""
    ledger = memory.Ledger(budget)
    lines = []
    stored = []  # the peak of each phase's stored outputs: they never coexist
    fast = config.uses_fast_feature_extraction
    if fast:
        needed = int(STORED_PEAK * examples * feature_size * np.dtype("float32").itemsize)
        fast = _fits(ledger, needed, f"the features of {examples} images", "Fast feature extraction", lines)
        stored += [needed] if fast else []
    boundary = None
    if config.may_cache_fine_tuning:
        boundary = activations.boundary(base, fine_tune_index)
    if boundary is not None:
        needed = int(STORED_PEAK * examples * boundary.bytes_per_example)
        what = f"the activations at {boundary.describe()} of {examples} images"
        if _fits(ledger, needed, what, "Cached fine-tuning", lines):
            stored.append(needed)
            lines.append(
                f"Cached fine-tuning: the frozen layers below {config.fine_tune_at} run once over {examples} "
                f"images; their activations at {boundary.describe()} take {memory.format_size(needed)} at their peak"
            )
        else:
            boundary = None
    if stored:
        ledger.take("stored features or activations", max(stored))
    end_to_end = (config.initial_epochs > 0 and not fast) or (config.fine_tune_epochs > 0 and boundary is None)
    if end_to_end:
        cache, line = image_cache(config.pipeline, config.data_dir, examples, encoded_image_bytes, ledger)
        lines.append(line)
    else:
        cache = pipeline.CACHE_NONE
        lines.append("Cache: none needed: both phases train on stored outputs of the frozen layers")
    return MemoryPlan(budget, cache, fast, boundary, tuple(lines))


def image_cache(
    config: pipeline.PipelineConfig,
    data_dir: str | None,
    examples: int,
    encoded_image_bytes: float,
    ledger: memory.Ledger,
):
    """(cache, line) for `examples` decoded images (pipeline.choose_cache), the store under
    DATA_DIR/tfpipe_store when --cache=auto sends them to disk; without a cache, the shuffle buffer
    (of encoded images, `encoded_image_bytes` each on average) is checked against the budget."""
    root = sources.store_root(data_dir)
    cache, line = pipeline.choose_cache(config.cache, examples, config.image_bytes, ledger, root)
    if cache == pipeline.CACHE_NONE:
        _check_shuffle_buffer(config, examples, encoded_image_bytes, ledger)
    return cache, line


def _fits(ledger: memory.Ledger, needed: int, what: str, name: str, lines: list) -> bool:
    """Whether a store that lives through one phase fits the budget (nothing is taken yet)."""
    if ledger.fits(needed):
        return True
    lines.append(
        f"{name} off, this phase trains end to end: {what} would take {memory.format_size(needed)} at their "
        f"peak, more than the {memory.format_size(ledger.left)} left of the memory budget"
    )
    return False


def _check_shuffle_buffer(
    config: pipeline.PipelineConfig, examples: int, encoded_image_bytes: float, ledger: memory.Ledger
) -> None:
    """Without a cache the shuffle buffer holds encoded images (decoding follows it): TfpipeError
    now if they cannot fit."""
    from tfpipe.errors import TfpipeError

    images = min(config.shuffle_buffer or examples, examples)
    needed = int(images * encoded_image_bytes)
    if not ledger.fits(needed):
        raise TfpipeError(
            f"--cache=none --shuffle_buffer={config.shuffle_buffer}: a buffer of {images} encoded images "
            f"({memory.format_size(int(encoded_image_bytes))} each on average) takes "
            f"{memory.format_size(needed)}, more than the {memory.format_size(ledger.left)} left of the memory "
            f"budget; give a smaller --shuffle_buffer or use --cache=auto"
        )
    ledger.take("shuffle buffer", needed)
