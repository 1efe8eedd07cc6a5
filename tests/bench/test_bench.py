"""tfpipe.bench.pipelines.compare: the comparison bench_input prints, called directly."""

import pytest
from helpers.runs import TINY, TINY_PIPELINE

from tfpipe.bench import pipelines as bench
from tfpipe.data import sources
from tfpipe.errors import TfpipeError

_CONFIG = TINY_PIPELINE


def _compare(data_dir, **kwargs):
    logged = []
    results = bench.compare(
        lambda: sources.open_source(TINY, data_dir), "train[:80%]", _CONFIG, log=logged.append, progress=False, **kwargs
    )
    return results, logged


def test_compare_measures_tfpipe_against_the_chosen_baseline(data_dir):
    results, logged = _compare(data_dir, epochs=2, baselines=[bench.CLASSIC_SERIAL])
    assert results["num_images"] == 32 and results["cores"] == bench.cores()
    assert "classic" in results and "classic_tf_defaults" not in results and results["classic"]["mode"] == "serial"
    for phase in ("cold", "warm"):
        assert results[f"speedup_{phase}"] == pytest.approx(
            results["tfpipe"][f"{phase}_images_per_sec"] / results["classic"][f"{phase}_images_per_sec"], abs=0.01
        )
    start = results["start_up_seconds"]
    assert start["total"] == pytest.approx(start["index"] + start["first_batch"], abs=0.02) and start["total"] > 0
    assert results["epochs_reshuffled"] is True
    assert any(line.startswith("Start-up:") for line in logged)
    assert sum(line.startswith("tfpipe epoch") for line in logged) == 2


def test_max_batches_bounds_the_images(data_dir):
    results, _ = _compare(data_dir, epochs=1, max_batches=2, baselines=[])
    assert results["num_images"] == 16 and "classic" not in results
    assert len(results["tfpipe"]["epoch_images_per_sec"]) == 1 and "warm_images_per_sec" not in results["tfpipe"]


def test_fewer_images_than_a_batch_is_refused(data_dir):
    with pytest.raises(TfpipeError, match="fewer than one batch"):
        bench.compare(
            lambda: sources.open_source(TINY, data_dir),
            "train[:4]",
            _CONFIG,
            epochs=1,
            baselines=[],
            log=lambda _: None,
            progress=False,
        )
