"""Shared fixtures: tiny datasets prepared offline in temporary folders."""

from __future__ import annotations

import os
import platform

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns oneDNN on by itself only on x86 CPUs with AVX512_VNNI, AVX512_BF16 or
# AMX, and with it on some kernels behave differently (an empty batch through conv2d,
# BUILD_NOTES.md). Forcing it makes every x86 machine run the suite as CI's does; the
# distribution tests set it both ways in their subprocesses where it matters.
if platform.machine().lower() in ("x86_64", "amd64"):
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
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
from helpers import tiny_backbone  # noqa: E402
from helpers.images import coloured_square, write_image  # noqa: E402
from helpers.runs import TINY, TINY_MULTICLASS, tiny_train_config  # noqa: E402

from tfpipe.data import sources  # noqa: E402
from tfpipe.models import folding  # noqa: E402
from tfpipe.models.augment import DEFAULT_AUGMENT  # noqa: E402

tiny_backbone.register()  # every test process can build the tiny test base (tiny_train_config's default)


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
    """A finished tiny two-class run (the default base, one epoch per phase, with a test split, the
    default augmentation): (config, results, log lines)."""
    from tfpipe.training.train import train

    config = tiny_train_config(
        tmp_path_factory.mktemp("finished"),
        data_dir,
        real_base=True,  # predict, evaluate and export see the default base, as a user's run has it
        initial_epochs=1,
        fine_tune_epochs=1,
        augment=DEFAULT_AUGMENT,  # end to end, with augmentation in the model, as a default run
    )
    logged = []
    results = train(config, log=logged.append)
    return config, results, logged


@pytest.fixture
def folded_inferences(monkeypatch):
    """Every FoldedInference made during the test, in the order their construction ends (a nested
    model's before the model around it): which passes ran folded, and what each folded."""
    made = []

    class Recorded(folding.FoldedInference):
        def __init__(self, model):
            super().__init__(model)
            made.append(self)

    monkeypatch.setattr(folding, "FoldedInference", Recorded)
    return made


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
