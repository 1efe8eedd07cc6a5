"""--weights: the auto rule, and the errors for what does not exist."""

import pytest

from tfpipe.data import sources
from tfpipe.errors import TfpipeError
from tfpipe.models import weights


def _resolve(choice, backbone="efficientnet_lite0", alpha=1.0, dataset="tfpipe_shapes"):
    spec = sources.DatasetSpec.parse(dataset)
    return weights.resolve(choice, backbone=backbone, alpha=alpha, dataset=str(spec), offline_dataset=spec.is_local)


def test_auto_is_imagenet_wherever_a_package_ships_the_weights():
    for dataset in ("tfpipe_shapes", "tfpipe_shapes/large", "cats_vs_dogs", "folder:/data/pets", " tfpipe_fractals"):
        assert _resolve("auto", dataset=dataset).keras_weights == "imagenet"


def test_auto_for_other_backbones_downloads_imagenet_but_not_on_the_offline_datasets():
    assert _resolve("auto", backbone="mobilenet_v2", dataset="cats_vs_dogs").keras_weights == "imagenet"
    assert _resolve("auto", backbone="mobilenet_v2", dataset="csv:/data/x/labels.csv").name == "imagenet"
    resolved = _resolve("auto", backbone="mobilenet_v2", alpha=0.35)
    assert resolved.name == "none" and resolved.keras_weights is None
    assert "mobilenet_v2 with alpha=0.35 has no ImageNet weights that a package ships" in resolved.description
    download = _resolve("imagenet", backbone="vgg16")
    assert "downloads them once" in download.description and download.source is None


def test_none_imagenet_and_a_path(tmp_path):
    assert _resolve("none").keras_weights is None and _resolve("None").name == "none"
    assert _resolve("imagenet").keras_weights == "imagenet"
    path = tmp_path / "base.weights.h5"
    path.write_bytes(b"")
    assert _resolve(str(path)).keras_weights == str(path)


@pytest.mark.parametrize(
    "choice, message",
    [
        ("fractal", "--weights=fractal is gone: the default base, efficientnet_lite0, starts from ImageNet"),
        ("fractals", "--weights=fractals: no such file"),
        ("", "--weights is empty"),
    ],
)
def test_what_does_not_exist_is_a_one_line_error(choice, message):
    with pytest.raises(TfpipeError, match=message) as error:
        _resolve(choice)
    assert "\n" not in str(error.value)
