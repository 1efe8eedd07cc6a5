"""A base of 18 layers for the tests of run mechanics (phases, resume, killed writers,
early stopping, mirrored replicas, pretrain), where EfficientNet-Lite0's weights play no
part and TensorFlow tracing its graph was most of a tiny run's 18 s (BUILD_NOTES.md, "Tests").

It has what those mechanics meet in the real base: convolutions and a depthwise convolution
followed by BatchNorm (the ops that fail on an empty replica batch with oneDNN on), a skip
connection across the fine-tune boundary, and layers below and above it. register() adds it
to tfpipe's backbone registry in this process; bin/ tools get it through
helpers.tools.tool_command's `tiny_base=True`, which starts them through this module.

Never used for accuracy: it starts from random weights (--weights=none), or from a file
that a test's pretraining wrote."""

from __future__ import annotations

import runpy
import sys

import keras

NAME = "tiny_test_base"
# Layers 0-8 are the stem and the first block; fine-tuning from 9 trains the second block,
# whose skip connection carries a tensor from below the boundary.
FINE_TUNE_AT = 9


def tiny_base(input_shape, include_top=False, weights=None):
    """keras.applications' signature: no top, and weights None or a .weights.h5 / .h5 file."""
    if include_top:
        raise ValueError("the tiny test base has no top")
    if weights not in (None, "none") and not str(weights).endswith(".h5"):
        raise ValueError(f"the tiny test base has no {weights} weights")
    layers = keras.layers
    inputs = keras.Input(input_shape, name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)  # 1
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="block1_dwconv")(x)  # 4
    x = layers.BatchNormalization(name="block1_dw_bn")(x)
    x = layers.ReLU(name="block1_relu")(x)
    x = layers.Conv2D(16, 1, use_bias=False, name="block1_project")(x)
    block1 = layers.BatchNormalization(name="block1_project_bn")(x)  # 8: below the boundary
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="block2_dwconv")(block1)  # 9
    x = layers.BatchNormalization(name="block2_dw_bn")(x)
    x = layers.ReLU(name="block2_relu")(x)
    x = layers.Conv2D(16, 1, use_bias=False, name="block2_project")(x)
    x = layers.BatchNormalization(name="block2_project_bn")(x)
    x = layers.Add(name="block2_add")([x, block1])
    x = layers.Conv2D(32, 1, use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(name="top_bn")(x)
    outputs = layers.ReLU(name="top_relu")(x)
    model = keras.Model(inputs, outputs, name=NAME)
    if weights not in (None, "none"):
        model.load_weights(weights)
    return model


def register():
    """Adds the tiny base to tfpipe's registry of backbones (this process only)."""
    from tfpipe.models import backbones

    # MobileNetV2's input scaling ([0, 255] -> [-1, 1]), taken from the registry rather than written again.
    scaling = backbones.get("mobilenet_v2").scaling
    # Its "own" size is the tests' 32 px: a run that names no --image_size stays tiny.
    backbones.BACKBONES.setdefault(NAME, backbones.Backbone(NAME, tiny_base, scaling, native_size=32))


if __name__ == "__main__":
    # python tiny_backbone.py BIN_TOOL ARGS...: runs the tool as its own process with the base registered.
    register()
    tool = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(tool, run_name="__main__")
