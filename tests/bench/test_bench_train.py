"""bench_train: the tutorial's recipe and tfpipe's, raced to the same validation accuracy."""

import pytest
from helpers.runs import TINY, read_json
from helpers.tools import assert_one_line_error, run_tool


@pytest.mark.slow
def test_both_sides_run_and_the_race_is_timed_from_each_launch(tmp_path, data_dir):
    out = tmp_path / "race.json"
    result = run_tool(
        "bench_train",
        f"--dataset={TINY}",
        f"--data_dir={data_dir}",
        "--image_size=32",
        "--batch_size=8",
        "--initial_epochs=1",
        "--fine_tune_epochs=1",
        "--target=0.25",
        f"--json={out}",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    race = read_json(out)
    assert race["target_val_accuracy"] == 0.25 and race["target_from"] == "--target"
    tutorial, tfpipe = race["tutorial"], race["tfpipe"]
    # The tutorial's fine-tuning fit restarts at history.epoch[-1], so it repeats one epoch number.
    assert [point["epoch"] for point in tutorial["curve"]] == [1, 1, 2]
    assert [point["epoch"] for point in tfpipe["curve"]] == [1, 2]
    for side in (tutorial, tfpipe):
        seconds = [point["seconds"] for point in side["curve"]]
        assert 0 < seconds[0] <= seconds[-1] < side["wall_seconds"]
        reached = [point["seconds"] for point in side["curve"] if point["val_accuracy"] >= 0.25]
        assert side["seconds_to_target"] == (reached[0] if reached else None)  # the first epoch at the target
        # The test split (4 images) scored: a whole number of images right.
        assert round(side["test_accuracy"] * 4, 6) in (0, 1, 2, 3, 4)
    assert "--augment=none" in tfpipe["flags"] and tfpipe["cached_fine_tuning"].startswith("block6a_bn")
    if tutorial["seconds_to_target"] and tfpipe["seconds_to_target"]:
        assert race["speedup_to_target"] == pytest.approx(tutorial["seconds_to_target"] / tfpipe["seconds_to_target"])
    assert "tfpipe reaches the target" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "flag, message", [("--target=1.5", "--target=1.5 is a validation accuracy"), ("--repeats=0", "race at least once")]
)
def test_bad_input_is_one_line(data_dir, flag, message):
    result = run_tool("bench_train", f"--data_dir={data_dir}", flag, timeout=120)
    assert_one_line_error(result, "bench_train", message)


def test_several_races_are_summed_up_by_the_median_of_their_ratios():
    from tfpipe.cli.bench_train import format_summary, summarize

    def race(ratio, tutorial_seconds, wall):
        return {"speedup_to_target": ratio, "speedup_wall": wall, "tutorial": {"seconds_to_target": tutorial_seconds}}

    races = [race(12.0, 60.0, 3.0), race(None, 50.0, 2.0), race(8.0, 40.0, 2.5), race(None, None, 1.0)]
    summary = summarize(races)
    assert summary["races"] == races and summary["speedups_to_target"] == [12.0, None, 8.0, None]
    # tfpipe never reaching the target counts as 0; the tutorial never reaching it gives no ratio.
    assert summary["median_speedup_to_target"] == 8.0
    assert summary["median_speedup_wall"] == 2.25
    assert format_summary(summary) == (
        "median of 4 races: tfpipe reaches the target 8.0x sooner "
        "(races: 12.0x, tfpipe never, 8.0x, tutorial never); whole runs 2.2x"
    )
    assert summarize([race(None, None, 1.0)])["median_speedup_to_target"] is None
