"""Shared fixtures: tiny datasets prepared offline in temporary folders."""

from __future__ import annotations

import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The default --data_dir (folder: and csv: datasets keep their index cache there) is a
# temporary folder, so tests never write to ~/tensorflow_datasets; subprocesses inherit it.
if "TFDS_DATA_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["TFDS_DATA_DIR"] = tempfile.mkdtemp(prefix="tfpipe-tests-tfds-")
    atexit.register(shutil.rmtree, os.environ["TFDS_DATA_DIR"], ignore_errors=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfpipe.data import sources  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "tfpipe_shapes/tiny"  # 40 images, 2 classes, 48-96 px
TINY_MULTICLASS = "tfpipe_shapes/tiny_multiclass"  # 40 images, 5 classes


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A tfds data_dir holding the tiny embedded configs, prepared once per session."""
    path = str(tmp_path_factory.mktemp("tensorflow_datasets"))
    for spec in (TINY, TINY_MULTICLASS):
        sources.open_source(spec, path)
    return path


@pytest.fixture(scope="session")
def tiny_source(data_dir):
    return sources.open_source(TINY, data_dir)


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, data_dir):
    """A finished tiny two-class run (one epoch per phase, with a test split): (config, results, log lines)."""
    from tfpipe.train import train

    config = tiny_train_config(tmp_path_factory.mktemp("finished"), data_dir, initial_epochs=1, fine_tune_epochs=1)
    logged = []
    results = train(config, log=logged.append)
    return config, results, logged


def write_image(path: str, pixels: np.ndarray, fmt: str) -> None:
    if fmt == "jpeg":
        data = tf.io.encode_jpeg(pixels).numpy()
    elif fmt == "png":
        data = tf.io.encode_png(pixels).numpy()
    else:  # bmp and gif through Pillow, which tfds' dependencies bring
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt.upper())
        data = buffer.getvalue()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def coloured_square(rng, size=24):
    return rng.integers(0, 255, (size, size + 4, 3), dtype=np.uint8)


@pytest.fixture
def image_folder(tmp_path):
    """Builds PATH/CLASS/* (split=None) or PATH/SPLIT/CLASS/* folders of small images in every format."""

    def make(per_class=6, classes=("cat", "dog"), splits=None, corrupt=True):
        rng = np.random.default_rng(0)
        root = tmp_path / "images"
        formats = ("jpeg", "png", "bmp", "gif")
        for split in splits or (None,):
            for name in classes:
                folder = root / split / name if split else root / name
                for i in range(per_class):
                    fmt = formats[i % len(formats)]
                    extension = {"jpeg": "jpg"}.get(fmt, fmt)
                    write_image(str(folder / f"{name}{i}.{extension}"), coloured_square(rng), fmt)
        if corrupt:
            first = root / (splits[0] if splits else "") / classes[0]
            (first / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
        return str(root)

    return make


def run_tool(tool: str, *args: str, timeout: float = 600, env_extra: dict | None = None):
    """Runs bin/<tool> with this interpreter; returns the CompletedProcess."""
    import subprocess

    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "bin", tool), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def assert_one_line_error(result, tool, message):
    """Exit status 2 and exactly one `TOOL: error: ...` line holding `message`, no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith(f"{tool}: error:")]
    assert len(errors) == 1 and message in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def tiny_train_config(tmp_path, data_dir, **overrides):
    """A TrainConfig for seconds-long runs: the tiny dataset at 32 px, MobileNetV2 at width 0.35."""
    from tfpipe.data.pipeline import PipelineConfig
    from tfpipe.train import TrainConfig

    values = dict(
        model_dir=str(tmp_path / "run"),
        dataset=TINY,
        data_dir=data_dir,
        pipeline=PipelineConfig(image_size=32, batch_size=8, seed=1),
        alpha=0.35,
        initial_epochs=2,
        fine_tune_epochs=2,
        learning_rate=1e-3,
        verbose=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


def run_bench(data_dir, json_path, *flags):
    """bin/bench_input on the tiny dataset at 32 px, batches of 8, writing `json_path`."""
    return run_tool(
        "bench_input",
        f"--dataset={TINY}",
        f"--data_dir={data_dir}",
        "--image_size=32",
        "--batch_size=8",
        f"--json={json_path}",
        *flags,
        timeout=300,
    )
