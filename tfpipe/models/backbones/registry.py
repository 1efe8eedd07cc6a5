"""Pretrained bases: name -> architecture (a Keras application, or one built in this
package), its input scaling, its weights.

Each backbone expects pixels scaled its own way; tfpipe feeds the model uint8
images and applies that scaling inside the model, so the pipeline and the
exported model never need to know which backbone is in use.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import keras
from keras import ops

from tfpipe.errors import TfpipeError
from tfpipe.models.backbones import efficientnet_lite
from tfpipe.models.weights import CHOICES as WEIGHT_CHOICES

# Keras applications with include_top=False accept inputs from 32 px up.
MIN_IMAGE_SIZE = 32
_MOBILENET_V2_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)


@keras.saving.register_keras_serializable(package="tfpipe")
class CaffeScaling(keras.layers.Layer):
    """VGG16 and ResNet50's input convention: BGR, ImageNet mean subtracted, no scaling."""

    _BGR_MEAN = (103.939, 116.779, 123.68)

    def call(self, images):
        bgr = ops.flip(images, axis=-1)
        return bgr - ops.convert_to_tensor(self._BGR_MEAN, dtype=bgr.dtype)


def _symmetric_scaling():
    # MobileNetV2: [0, 255] -> [-1, 1], as keras.applications.mobilenet_v2.preprocess_input.
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_symmetric")


def _lite_scaling():
    # EfficientNet-Lite: [0, 255] -> (x - 127) / 128, TensorFlow's convention for Lite.
    return keras.layers.Rescaling(
        1.0 / efficientnet_lite.INPUT_STD,
        offset=-efficientnet_lite.INPUT_MEAN / efficientnet_lite.INPUT_STD,
        name="scale_for_lite",
    )


@dataclasses.dataclass(frozen=True)
class Backbone:
    name: str
    application: Callable[..., keras.Model]
    scaling: Callable[[], keras.layers.Layer] | None  # None: the base scales its own input
    # The image size its ImageNet weights were trained at (Keras' default input size for the
    # keras.applications): a run's --image_size when none is given. Smaller loses accuracy on
    # real photos that more epochs do not win back (BUILD_NOTES.md, "Image size").
    native_size: int
    takes_alpha: bool = False

    def image_size(self, requested: int | None) -> tuple[int, str]:
        """The size a run uses, and a line saying which and why: `requested` (--image_size) when
        given, else this base's own."""
        if requested is None:
            return self.native_size, (
                f"Image size: {self.native_size} px, the size {self.name}'s ImageNet weights were trained at "
                "(--image_size sets another)"
            )
        note = "" if requested == self.native_size else f"; {self.name}'s own is {self.native_size}"
        return requested, f"Image size: {requested} px (--image_size{note})"

    def check(self, image_size: int, alpha: float) -> None:
        if image_size < MIN_IMAGE_SIZE:
            raise TfpipeError(
                f"--image_size={image_size} is too small for {self.name}: it needs at least {MIN_IMAGE_SIZE} px"
            )
        if self.takes_alpha and alpha not in _MOBILENET_V2_ALPHAS:
            raise TfpipeError(f"--alpha={alpha} is not a MobileNetV2 width; use one of {_MOBILENET_V2_ALPHAS}")
        if not self.takes_alpha and alpha != 1.0:
            raise TfpipeError(f"--alpha applies to mobilenet_v2 only; leave it at 1.0 for {self.name}")

    def build_base(self, image_size: int, weights: str | None, alpha: float = 1.0) -> keras.Model:
        """The application with include_top=False; weights: 'imagenet', None or a file path
        (tfpipe.models.weights.resolve turns --weights into one of them)."""
        self.check(image_size, alpha)
        kwargs = {"alpha": alpha} if self.takes_alpha else {}
        try:
            return self.application(
                input_shape=(image_size, image_size, 3), include_top=False, weights=weights, **kwargs
            )
        except TfpipeError:
            raise  # already says what is wrong (a packaged weights file: tfpipe.models.weights)
        except Exception as error:  # Keras raises several types; all mean the same to the user
            raise TfpipeError(self._weights_failure(weights, alpha, error)) from None

    def _weights_failure(self, weights, alpha, error):
        reason = " ".join(str(error).split())[:300]
        what = f"{self.name}" + (f" with alpha={alpha}" if self.takes_alpha else "")
        if weights == "imagenet":
            return (
                f"could not get the ImageNet weights of {what} ({reason}); offline, put the no-top .h5 file in "
                "~/.keras/models/ or pass --weights=PATH, or --weights=none to train from scratch"
            )
        return (
            f"--weights={weights} does not fit {what} (include_top=False): {reason}; give the no-top weights "
            f"file of this backbone and alpha, or {WEIGHT_CHOICES}"
        )


BACKBONES = {
    # Google's Lite0 checkpoint was trained at 224 px (efficientnet_lite.py), as Model Maker trains it.
    "efficientnet_lite0": Backbone("efficientnet_lite0", efficientnet_lite.EfficientNetLite0, _lite_scaling, 224),
    # Keras also ships MobileNetV2 weights for 96-192 px; 224 is its default and its largest.
    "mobilenet_v2": Backbone(
        "mobilenet_v2", keras.applications.MobileNetV2, _symmetric_scaling, 224, takes_alpha=True
    ),
    # EfficientNet rescales and normalizes its [0, 255] input inside the base.
    "efficientnet_b0": Backbone("efficientnet_b0", keras.applications.EfficientNetB0, None, 224),
    "vgg16": Backbone("vgg16", keras.applications.VGG16, CaffeScaling, 224),
    "resnet50": Backbone("resnet50", keras.applications.ResNet50, CaffeScaling, 224),
}


def get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise TfpipeError(f"--backbone={name!r} is not known; use one of {', '.join(BACKBONES)}") from None
