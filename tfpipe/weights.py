"""--weights: what a base starts from, and the weights that ship inside tfpipe.

    auto       fractal on the offline datasets (those tfpipe draws itself) when
               tfpipe ships a base for the backbone and width, none there
               otherwise; imagenet on every other dataset
    fractal    the base tfpipe ships, pretrained offline on tfpipe_fractals (bin/pretrain)
    imagenet   keras.applications' ImageNet weights (downloaded once, needs internet)
    none       random initialization
    PATH       a Keras no-top weights file (.h5 or .weights.h5), loaded by topology

This module is the one home of that rule: the backbones know how to build a
base from what resolve() returns, not which weights suit which dataset.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os

from tfpipe.errors import TfpipeError

AUTO, FRACTAL, IMAGENET, NONE = "auto", "fractal", "imagenet", "none"
CHOICES = f"{AUTO}, {FRACTAL}, {IMAGENET}, {NONE} or a path to a Keras no-top .h5 file"
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrained")


@dataclasses.dataclass(frozen=True)
class ShippedBase:
    """A no-top weights file inside the package, with the checksum recorded when it was made."""

    backbone: str
    alpha: float
    file: str
    sha256: str
    pretraining: str  # how it was made, in one line (the full record is in BUILD_NOTES.md)

    @property
    def path(self) -> str:
        return os.path.join(SHIPPED_DIR, self.file)


SHIPPED = (
    ShippedBase(
        backbone="mobilenet_v2",
        alpha=1.0,
        file="mobilenet_v2_1.0_fractal.weights.h5",
        sha256="a664928e2977580c100e48c53e2510dbeaec5c7dbcab5289105b0f7903703af5",
        pretraining="bin/pretrain: 100 tfpipe_fractals classes, 27,000 images of 64 px, 15 epochs",
    ),
)


@dataclasses.dataclass(frozen=True)
class Weights:
    """A resolved --weights: its name for people and results.json, and what Keras takes."""

    name: str  # auto resolved: fractal, imagenet, none, or the file's path
    keras_weights: str | None  # keras.applications' weights argument: "imagenet", None or a path
    description: str


def resolve(weights: str, *, backbone: str, alpha: float, dataset: str, offline_dataset: bool) -> Weights:
    """--weights -> Weights; TfpipeError for an unknown name, a missing file or no shipped base.

    dataset: its name, for messages; offline_dataset: tfpipe draws it itself (the auto rule).
    """
    choice = (weights or "").strip()
    if choice == AUTO:
        if not offline_dataset:
            return _imagenet()
        if shipped_base(backbone, alpha) is None:
            return Weights(
                NONE,
                None,
                f"none (--weights=auto: {dataset} runs offline and tfpipe ships no pretrained "
                f"{_what(backbone, alpha)}, so the base starts from random weights)",
            )
        return _fractal(backbone, alpha, f"--weights=auto on {dataset}, which runs offline")
    if choice == FRACTAL:
        return _fractal(backbone, alpha, "--weights=fractal")
    if choice == IMAGENET:
        return _imagenet()
    if choice.lower() == NONE:
        return Weights(NONE, None, "none (random initialization)")
    if not choice:
        raise TfpipeError(f"--weights is empty; use {CHOICES}")
    path = os.path.abspath(os.path.expanduser(choice))
    if not os.path.isfile(path):
        raise TfpipeError(f"--weights={choice}: no such file; give a Keras no-top .h5 file, or {CHOICES}")
    return Weights(path, path, f"{path} (loaded by topology)")


def shipped_base(backbone: str, alpha: float) -> ShippedBase | None:
    return next((s for s in SHIPPED if s.backbone == backbone and s.alpha == alpha), None)


def _fractal(backbone: str, alpha: float, why: str) -> Weights:
    shipped = shipped_base(backbone, alpha)
    if shipped is None:
        available = ", ".join(f"--backbone={s.backbone} --alpha={s.alpha}" for s in SHIPPED)
        raise TfpipeError(
            f"--weights=fractal: tfpipe ships no pretrained {_what(backbone, alpha)}; it ships {available}. "
            "Use one of those, pretrain your own with bin/pretrain and pass --weights=PATH, or --weights=none"
        )
    check_shipped(shipped)
    return Weights(
        FRACTAL,
        shipped.path,
        f"fractal ({why}: tfpipe's {_what(backbone, alpha)} pretrained offline on formula-drawn images, "
        f"{shipped.pretraining}; {shipped.file})",
    )


def _imagenet() -> Weights:
    return Weights(IMAGENET, IMAGENET, "imagenet (keras.applications downloads them once into ~/.keras/models)")


def _what(backbone: str, alpha: float) -> str:
    return f"{backbone}" + (f" with alpha={alpha}" if backbone == "mobilenet_v2" else "")


@functools.cache
def check_shipped(shipped: ShippedBase) -> None:
    """The file is there and is the one recorded (a broken install fails here, not deep in Keras)."""
    if not os.path.isfile(shipped.path):
        raise TfpipeError(f"{shipped.path} is missing from this install of tfpipe; reinstall it (pip install .)")
    if sha256_of(shipped.path) != shipped.sha256:
        raise TfpipeError(
            f"{shipped.path} does not match its recorded sha256 {shipped.sha256}; reinstall tfpipe (pip install .)"
        )


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
