"""Pretrained bases: the registry (name -> architecture, input scaling, weights), the
architectures built here (EfficientNet-Lite0), and the reader of the PyTorch weight
files they come in.

Owns: building a base from what tfpipe.models.weights resolved. Imports: Keras, numpy,
tfpipe.models.weights and tfpipe.errors; nothing about data, training or runs.
"""

from tfpipe.models.backbones.registry import (  # noqa: F401
    BACKBONES,
    MIN_IMAGE_SIZE,
    Backbone,
    CaffeScaling,
    get,
)
