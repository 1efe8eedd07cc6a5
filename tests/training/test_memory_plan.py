"""Without a cache, the shuffle buffer of encoded images is checked against the memory budget."""

import pytest

from tfpipe import memory
from tfpipe.data import pipeline
from tfpipe.errors import TfpipeError
from tfpipe.training import memory_plan

# 224 px decoded: 150,528 bytes an image; a JPEG of that size: about 20 KB.
DECODED, ENCODED = 224 * 224 * 3, 20_000


def _image_cache(budget_bytes, shuffle_buffer, examples=10_000):
    config = pipeline.PipelineConfig(image_size=224, cache="none", shuffle_buffer=shuffle_buffer)
    ledger = memory.Ledger(memory.MemoryBudget(budget_bytes, "--memory_budget=test"))
    return memory_plan.image_cache(config, "/data", examples, ENCODED, ledger), ledger


def test_a_buffer_is_sized_by_its_encoded_images_not_their_decoded_size():
    budget = 100 * 2**20  # 1,000 encoded images (20 MB) fit; decoded (150 MB) they would not
    assert 1000 * ENCODED < budget < 1000 * DECODED
    (cache, _), _ = _image_cache(budget, shuffle_buffer=1000)
    assert cache == pipeline.CACHE_NONE


def test_a_buffer_beyond_the_budget_fails_at_once_naming_the_flags():
    with pytest.raises(TfpipeError) as error:
        _image_cache(10 * 2**20, shuffle_buffer=0)  # the whole split: 10,000 x 20 KB = 191 MiB
    message = str(error.value)
    assert "a buffer of 10000 encoded images (20 KiB each on average) takes 191 MiB" in message
    assert "--shuffle_buffer" in message and "--cache=auto" in message
