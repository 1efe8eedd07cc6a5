"""bin/train and bin/bench_input as a user runs them."""

import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers.runs import TINY, TINY_BASE_FLAGS, TINY_TRAIN_FLAGS, read_json
from helpers.tools import assert_one_line_error, bad_input_runs, run_bench, run_tool, tool_command

import tfpipe  # noqa: F401  (registers tfpipe's Keras objects)


@pytest.mark.slow
def test_train_writes_every_output(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    before = time.time()
    result = run_tool(
        "train",
        f"--dataset={TINY}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        # No --image_size: the run takes the base's own (the tiny base's is 32 px).
        *[flag for flag in TINY_TRAIN_FLAGS if not flag.startswith("--image_size")],
        *TINY_BASE_FLAGS,  # the default base's run is the session's finished_run (test_train)
        "--initial_epochs=2",
        "--fine_tune_epochs=1",
        tiny_base=True,
        shell_first="sleep 2",  # the tool runs in the shell's process, as in `sh -c "pip install . && bin/train"`
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[1] == "Weights: none (random initialization)"
    assert result.stdout.splitlines()[2].startswith("Image size: 32 px, the size tiny_test_base's")
    assert "test accuracy" in result.stdout and "Epoch 3/3" in result.stdout
    assert "final.keras, export/, training_curves.png" in result.stdout

    history = read_json(model_dir / "history.json")
    assert [(r["epoch"], r["phase"]) for r in history] == [
        (1, "feature_extraction"),
        (2, "feature_extraction"),
        (3, "fine_tune"),
    ]
    results = read_json(model_dir / "results.json")
    expected = {
        "test_loss",
        "test_accuracy",
        "best_epoch",
        "base_layers",
        "trainable_variables",
        "num_classes",
        "class_names",
        "weights",
        "wall_seconds",
    }
    assert expected <= set(results)
    # The head's kernel and bias; then also the tiny base's second block and top (3 kernels, 3 BatchNorms)
    assert results["trainable_variables"] == {"feature_extraction": 2, "fine_tune": 11}
    assert set(results["wall_seconds"]) == {"feature_extraction", "fine_tune", "total"}
    # The run's timeline starts when bin/train started, not when the shell that exec'd it did.
    first = results["first_epoch_seconds"]
    assert first["from"] == "launch" and first["started_at"] >= before + 2
    assert list(first["seconds"])[0] == "imports and start-up"
    assert results["weights"] == "none" and results["class_names"] == ["ellipse", "rectangle"]
    assert results["image_size"] == 32

    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    for name in ("best.keras", "final.keras"):
        model = keras.models.load_model(model_dir / name)
        assert model.predict(images, verbose=0).shape == (3, 1)
    serve = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy as np, tensorflow as tf\n"
            f"m = tf.saved_model.load({str(model_dir / 'export')!r})\n"
            "print(m.serve(np.zeros((3, 32, 32, 3), np.uint8)).shape)\n"
            "assert 'tfpipe' not in sys.modules",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert serve.returncode == 0 and "(3, 1)" in serve.stdout, serve.stderr[-2000:]
    with open(model_dir / "training_curves.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    events = [f for _, _, files in os.walk(model_dir / "tensorboard") for f in files if "tfevents" in f]
    assert events


def _train_command(data_dir, model_dir, *flags):
    """bin/train on the tiny dataset and the tiny test base, as a command line for subprocess."""
    return tool_command(
        "train",
        f"--dataset={TINY}",
        f"--data_dir={data_dir}",
        f"--model_dir={model_dir}",
        *TINY_TRAIN_FLAGS,
        *TINY_BASE_FLAGS,
        *flags,
        tiny_base=True,
    )


@pytest.mark.slow
def test_train_resumes_after_kill_9(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    # Epochs of the tiny run take a fraction of a second: enough of them that the kill lands mid-run.
    command = _train_command(data_dir, model_dir, "--initial_epochs=2", "--fine_tune_epochs=30", "--noexport")
    state_file = model_dir / "checkpoint" / "state.json"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # kill it once it is inside the fine-tuning phase
            if state_file.exists() and read_json(state_file)["completed_epochs"] >= 3:
                break
            assert process.poll() is None, "train ended before it could be interrupted"
            time.sleep(0.2)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    completed = read_json(state_file)["completed_epochs"]
    assert 3 <= completed < 32

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resuming {model_dir} after epoch {completed}" in resumed.stdout
    history = read_json(model_dir / "history.json")
    assert [r["epoch"] for r in history] == list(range(1, 33))
    assert [r["phase"] for r in history] == ["feature_extraction"] * 2 + ["fine_tune"] * 30
    assert not (model_dir / "export").exists() and "export/" not in resumed.stdout  # --noexport


@pytest.mark.slow
def test_a_second_train_on_a_live_runs_model_dir_is_refused_naming_it(tmp_path, data_dir):
    model_dir = tmp_path / "run"
    command = _train_command(data_dir, model_dir, "--initial_epochs=50", "--fine_tune_epochs=0", "--noexport")
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (model_dir / "checkpoint" / "state.json").exists():  # it is training
            assert first.poll() is None and time.monotonic() < deadline, "the first train did not start training"
            time.sleep(0.2)
        started = time.monotonic()
        second = subprocess.run(command, capture_output=True, text=True, timeout=120)
        refused_after = time.monotonic() - started
        assert first.poll() is None, "the first run must still be alive"
    finally:
        first.kill()
        first.wait()
    assert_one_line_error(second, "train", f"is in use by a live run (pid {first.pid} on host")
    assert refused_after < 60  # TensorFlow's import included; nothing is trained or prepared first


TRAIN_BAD_INPUT = [
    (["--initial_epochs=-1"], "--initial_epochs=-1 is negative"),
    (["--fine_tune_at=500"], "--fine_tune_at=500 is out of range"),
    (["--weights=/missing/file.h5"], "no such file"),
    (["--weights=fractal"], "--weights=fractal is gone"),
    (["--backbone=efficientnet_lite0", "--alpha=0.35"], "--alpha applies to mobilenet_v2 only"),
    (["--dataset=imagenet_does_not_exist"], "unknown dataset"),
    (["--train_split=train[:80"], "not a valid split"),
]


@pytest.fixture(scope="session")  # one tool process for all the cases, even when xdist interleaves modules
def train_bad_input(tmp_path_factory, data_dir):
    model_dir = tmp_path_factory.mktemp("bad_input") / "run"
    return bad_input_runs(
        "train", TRAIN_BAD_INPUT, f"--data_dir={data_dir}", f"--model_dir={model_dir}", *TINY_TRAIN_FLAGS
    )


@pytest.mark.xdist_group("train_bad_input")
@pytest.mark.parametrize("flags, message", TRAIN_BAD_INPUT)
def test_train_reports_bad_input_in_one_line(train_bad_input, flags, message):
    assert_one_line_error(train_bad_input[message], "train", message)


def test_bench_input_end_to_end_writes_valid_json(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    result = run_bench(data_dir, out, "--epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    data = read_json(out)
    for pipeline in ("classic", "classic_tf_defaults", "tfpipe"):
        assert data[pipeline]["cold_images_per_sec"] > 0 and data[pipeline]["warm_images_per_sec"] > 0
    assert data["classic"]["mode"] == "serial" and data["classic_tf_defaults"]["mode"] == "tf_defaults"
    for key in ("speedup_cold", "speedup_warm", "peak_rss_mb", "num_images", "image_size", "batch_size", "cores"):
        assert key in data
    assert data["speedup_cold"] == pytest.approx(
        data["tfpipe"]["cold_images_per_sec"] / data["classic"]["cold_images_per_sec"], abs=0.01
    )
    assert data["speedup_warm_vs_tf_defaults"] == pytest.approx(
        data["tfpipe"]["warm_images_per_sec"] / data["classic_tf_defaults"]["warm_images_per_sec"], abs=0.01
    )
    assert data["num_images"] == 32 and data["image_size"] == 32 and data["batch_size"] == 8
    assert data["epochs_reshuffled"] is True
    assert "tfpipe / classic (serial)" in result.stdout and "tfpipe / classic (TF defaults)" in result.stdout
    assert "peak RSS" in result.stdout and "reshuffled: yes" in result.stdout


def test_bench_input_one_epoch_reports_the_cold_epoch_only(tmp_path, data_dir):
    out = tmp_path / "bench.json"
    result = run_bench(data_dir, out, "--epochs=1", "--noclassic_tf_defaults")
    assert result.returncode == 0, result.stderr[-3000:]
    data = read_json(out)
    assert data["tfpipe"]["cold_images_per_sec"] > 0 and data["speedup_cold"] > 0
    assert "warm_images_per_sec" not in data["tfpipe"] and "speedup_warm" not in data
    assert len(data["tfpipe"]["epoch_images_per_sec"]) == 1
    ratio_row = next(line for line in result.stdout.splitlines() if line.startswith("tfpipe / classic (serial)"))
    assert ratio_row.rstrip().endswith("-")


def test_bench_input_beyond_the_budget_writes_a_store_that_a_second_process_reads(tmp_path, data_dir):
    # A data_dir of its own, so that this run, not an earlier one, writes the store.
    shutil.copytree(os.path.join(data_dir, TINY.split("/")[0]), tmp_path / "data" / TINY.split("/")[0])
    out = tmp_path / "bench.json"
    # A boolean flag among those the second process is given: absl writes it as --nojpeg_dct_scaling.
    flags = ("--epochs=2", "--memory_budget=1KB", "--noclassic", "--noclassic_tf_defaults", "--nostages")
    result = run_bench(str(tmp_path / "data"), out, *flags, "--nojpeg_dct_scaling")
    assert result.returncode == 0, result.stderr[-3000:]
    data = read_json(out)
    assert data["store"]["written"] and data["cache"].startswith(str(tmp_path / "data"))
    second = data["second_process"]
    assert second["store"]["written"] is False and second["cold_images_per_sec"] > 0  # it decoded nothing
    assert "tfpipe, 2nd process" in result.stdout


BENCH_INPUT_BAD_INPUT = [
    (["--batch_size=0"], "--batch_size=0 must be a positive"),
    (["--image_size=-1"], "--image_size=-1 must be a positive"),
    (["--epochs=0"], "--epochs=0 must be at least 1"),
    (["--dataset=folder:/no/such/folder"], "does not exist"),
    (["--train_split=train[50%:50%]"], "selects no examples"),
    (["--fine_tune_at=500"], "--fine_tune_at=500 is out of range"),
]


@pytest.fixture(scope="session")  # one tool process for all the cases, even when xdist interleaves modules
def bench_input_bad_input(data_dir):
    return bad_input_runs("bench_input", BENCH_INPUT_BAD_INPUT, f"--dataset={TINY}", f"--data_dir={data_dir}")


@pytest.mark.xdist_group("bench_input_bad_input")
@pytest.mark.parametrize("flags, message", BENCH_INPUT_BAD_INPUT)
def test_bench_input_reports_bad_input_in_one_line(bench_input_bad_input, flags, message):
    assert_one_line_error(bench_input_bad_input[message], "bench_input", message)
