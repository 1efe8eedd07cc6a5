"""--weights: the auto rule, the shipped fractal base, and the errors for what does not exist."""

import shutil

import numpy as np
import pytest

from tfpipe import backbones, weights
from tfpipe.data import sources
from tfpipe.errors import TfpipeError


def _resolve(choice, backbone="mobilenet_v2", alpha=1.0, dataset="tfpipe_shapes"):
    spec = sources.DatasetSpec.parse(dataset)
    return weights.resolve(choice, backbone=backbone, alpha=alpha, dataset=str(spec), offline_dataset=spec.is_local)


def test_auto_is_fractal_on_the_embedded_dataset_and_imagenet_elsewhere():
    assert _resolve("auto").name == "fractal"
    assert _resolve("auto", dataset="tfpipe_shapes/large").keras_weights == weights.SHIPPED[0].path
    assert _resolve("auto", dataset="cats_vs_dogs").keras_weights == "imagenet"
    assert _resolve("auto", dataset="folder:/data/pets").name == "imagenet"
    assert _resolve("auto", dataset="csv:/data/tfpipe_shapes/labels.csv").name == "imagenet"
    assert _resolve("auto", dataset=" tfpipe_fractals/tiny:1.0.0").name == "fractal"


def test_auto_on_the_embedded_dataset_without_a_shipped_base_starts_from_random_weights():
    resolved = _resolve("auto", alpha=0.35)
    assert resolved.name == "none" and resolved.keras_weights is None
    assert "ships no pretrained mobilenet_v2 with alpha=0.35" in resolved.description


def test_none_imagenet_and_a_path(tmp_path):
    assert _resolve("none").keras_weights is None and _resolve("None").name == "none"
    assert _resolve("imagenet", dataset="tfpipe_shapes").keras_weights == "imagenet"
    path = tmp_path / "base.weights.h5"
    path.write_bytes(b"")
    assert _resolve(str(path)).keras_weights == str(path)


@pytest.mark.parametrize(
    "choice, backbone, alpha, message",
    [
        ("fractal", "mobilenet_v2", 0.35, "ships no pretrained mobilenet_v2 with alpha=0.35; it ships --backbone="),
        ("fractal", "efficientnet_b0", 1.0, "ships no pretrained efficientnet_b0"),
        ("fractals", "mobilenet_v2", 1.0, "--weights=fractals: no such file"),
        ("", "mobilenet_v2", 1.0, "--weights is empty"),
    ],
)
def test_what_does_not_exist_is_a_one_line_error(choice, backbone, alpha, message):
    with pytest.raises(TfpipeError, match=message) as error:
        _resolve(choice, backbone=backbone, alpha=alpha)
    assert "\n" not in str(error.value)


def test_the_shipped_file_matches_its_recorded_checksum_and_loads_by_name():
    shipped = weights.shipped_base("mobilenet_v2", 1.0)
    assert weights.sha256_of(shipped.path) == shipped.sha256
    resolved = _resolve("fractal")
    base = backbones.get("mobilenet_v2").build_base(64, resolved.keras_weights, alpha=1.0)
    random = backbones.get("mobilenet_v2").build_base(64, None, alpha=1.0)
    kernel = base.get_layer("Conv1").kernel.numpy()
    assert not np.array_equal(kernel, random.get_layer("Conv1").kernel.numpy())
    # Pretrained BatchNorm statistics, not the initial zeros.
    assert not np.allclose(base.get_layer("bn_Conv1").moving_mean.numpy(), 0.0)


def test_a_damaged_shipped_file_is_refused(tmp_path, monkeypatch):
    shipped = weights.shipped_base("mobilenet_v2", 1.0)
    damaged = tmp_path / shipped.file
    shutil.copy(shipped.path, damaged)
    with open(damaged, "r+b") as file:
        file.seek(-8, 2)
        file.write(b"\0" * 8)
    monkeypatch.setattr(weights, "SHIPPED_DIR", str(tmp_path))
    weights.check_shipped.cache_clear()
    try:
        with pytest.raises(TfpipeError, match="does not match its recorded sha256"):
            _resolve("fractal")
    finally:
        weights.check_shipped.cache_clear()
