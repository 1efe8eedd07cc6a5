"""bench_input's stages and verdict: each stage measured alone on the tiny dataset, and the verdict
naming the right bound in three situations built from those measurements."""

import pytest
from helpers.runs import TINY

from tfpipe.bench import stages
from tfpipe.data import pipeline, sources
from tfpipe.models import augment

SPLIT = "train[:80%]"


@pytest.fixture(scope="module")
def measured(data_dir):
    """Stage rates of the tiny split at 64 px, batch 8: plain, and with augmentation in the pipeline."""
    source = sources.open_source(TINY, data_dir)
    config = pipeline.PipelineConfig(image_size=64, batch_size=8, seed=1, cache="memory")
    made = pipeline.Pipeline(source, SPLIT, config)
    plain = stages.pipeline_stages(source, SPLIT, config, made, None, None)
    heavy = augment.build(augment.parse("rotation=0.3,zoom=0.3,translation=0.2,contrast=0.5"), seed=1)
    augmented = stages.pipeline_stages(source, SPLIT, config, made, heavy, None)
    return plain, augmented


def test_every_stage_is_measured(measured):
    plain, augmented = measured
    for rates in (plain, augmented):
        assert rates["read"] > 0 and rates["decode"] > 0 and rates["cache"] > 0 and rates["read_mb_per_sec"] > 0
    assert plain["augmentation"] is None and augmented["augmentation"] > 0
    # Reading decoded uint8 images back from memory is faster than decoding them.
    assert plain["cache"] > plain["decode"]


def test_a_slow_model_is_the_bound_and_input_is_not_the_bottleneck(measured):
    plain, _ = measured
    slowest = min(plain[name] for name in ("read", "decode", "cache"))
    bound, line = stages.verdict(plain, {"frozen": slowest / 10, "fine-tuning": slowest / 30})
    assert bound == "model" and "input is not the bottleneck" in line


def test_a_decode_slower_than_the_model_bounds_the_first_epoch(measured):
    plain, _ = measured
    # Reading the tiny files can measure slower than decoding them on a loaded machine: read as fast as
    # the cache here, so that the decode is the one slow stage of the first epoch.
    rates = {**plain, "read": plain["cache"]}
    assert plain["decode"] < plain["cache"]
    between = (plain["decode"] * plain["cache"]) ** 0.5
    bound, line = stages.verdict(rates, {"frozen": between})
    assert bound == "decode" and line.startswith("decode and resize bounds the first epoch")
    assert "--cache=auto" in line


def test_augmentation_in_the_pipeline_slower_than_the_model_bounds_training(measured):
    _, augmented = measured
    # The tiny split's cache epoch is four batches, timed with its iterator's start: a clean-clone
    # run measured it at 789 img/s against the augmentation's 995. Read back as fast as four times
    # the augmentation at the least, so that the augmentation is the one slow stage of later epochs.
    rates = {**augmented, "cache": max(augmented["cache"], 4 * augmented["augmentation"])}
    between = (rates["augmentation"] * rates["cache"]) ** 0.5
    bound, line = stages.verdict(rates, {"frozen": between, "fine-tuning": between / 3})
    assert bound == "augmentation" and line.endswith("use --augment_on=model")
    assert f"({augmented['augmentation']:,.0f} img/s) bounds training" in line
