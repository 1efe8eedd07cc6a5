"""A frozen base run in inference with its BatchNormalization folded into the convolutions.

In inference a BatchNormalization after a convolution is a per-channel scale and shift,
which the convolution's kernel and bias can carry: w' = w * s, b' = (b - mean) * s + beta,
with s = gamma / sqrt(variance + epsilon). Keras runs it as two elementwise passes over the
activations (tf.nn.batch_normalization), and TensorFlow's CPU graph fuses a convolution with
its bias and activation only when nothing stands between them: folded, EfficientNet-Lite0's
frozen pass at 160 px ran about 300 images a second on two cores against 176-211 (BUILD_NOTES.md,
"Folded batch norm"). tfpipe's single passes over a frozen base (fast feature extraction, the
activations for cached fine-tuning) run this way; training, evaluation and every saved or
exported model keep the original layers.

The model's own graph is walked (Keras' Functional._run_through_graph) with the folded pairs
swapped for constants, rather than cloned: cloning EfficientNet-Lite0 took 0.6 s, a third of
the pass it shortens.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

# Exact types: a subclass may compute its output another way (a standardized kernel, say).
_CONVOLUTIONS = (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
# The Keras internals the walk uses; a Keras without them runs the model as it is.
_WALKED = ("_run_through_graph", "_nodes_by_depth", "_call_context_args")


class FoldedInference:
    """Calls `model` in inference (training=False) with each BatchNormalization that alone reads
    a linear, channels-last Conv2D or DepthwiseConv2D folded into it, in nested Functional
    models too. The folded weights are computed once, from the values the model has now; the
    model itself is not changed."""

    def __init__(self, model: keras.Model):
        self.model = model
        self._convolutions: dict[int, _FoldedConvolution] = {}
        self._skipped: set[int] = set()
        self._nested: dict[int, FoldedInference] = {}
        self._walk = _is_functional(model)
        if not self._walk:
            return
        for conv, norm in _foldable_pairs(model):
            self._convolutions[id(conv)] = _FoldedConvolution(conv, norm)
            self._skipped.add(id(norm))
        for layer in model.layers:
            if _is_functional(layer):
                self._nested[id(layer)] = FoldedInference(layer)

    @property
    def folded(self) -> list[str]:
        """The names of the BatchNormalization layers folded away, nested models' included."""
        names = [conv.norm_name for conv in self._convolutions.values()]
        return names + [name for nested in self._nested.values() for name in nested.folded]

    def __call__(self, inputs):
        if not self._walk:
            return self.model(inputs, training=False)
        return _single(self.model._run_through_graph(inputs, operation_fn=self._operation))

    def _operation(self, operation):
        if id(operation) in self._convolutions:
            return self._convolutions[id(operation)]
        if id(operation) in self._skipped:
            return lambda inputs, **kwargs: inputs
        if id(operation) in self._nested:  # a Functional model takes its inputs first (masks are not used)
            return lambda *args, **kwargs: self._nested[id(operation)](args[0] if args else kwargs["inputs"])

        def inference(*args, **kwargs):
            if "training" in getattr(operation, "_call_context_args", ()):  # Keras' own test
                kwargs["training"] = False
            return operation(*args, **kwargs)

        return inference


class _FoldedConvolution:
    """A convolution and the BatchNormalization after it, as one convolution with a bias."""

    def __init__(self, conv, norm):
        self.conv, self.norm_name = conv, norm.name
        self.depthwise = type(conv) is keras.layers.DepthwiseConv2D
        # As the two layers would: computed in the convolution's dtype, given out in the norm's
        # (mixed precision: float16 or bfloat16 inside, the norm's output dtype after).
        self.output_dtype = norm.compute_dtype
        kernel, bias = _folded_weights(conv, norm, self.depthwise)
        self.kernel = tf.constant(kernel, dtype=conv.compute_dtype)
        self.bias = tf.constant(bias, dtype=conv.compute_dtype)

    def __call__(self, inputs, **kwargs):
        kernel, bias = self.kernel, self.bias
        inputs = tf.cast(inputs, kernel.dtype)  # no op when they agree
        conv = self.conv
        if self.depthwise:
            outputs = ops.depthwise_conv(
                inputs,
                kernel,
                strides=conv.strides,
                padding=conv.padding,
                dilation_rate=conv.dilation_rate,
                data_format=conv.data_format,
            )
        else:
            outputs = conv.convolution_op(inputs, kernel)
        # BiasAdd, which TensorFlow fuses into the convolution (one process, an Add: 251 images/s, this: 317).
        return tf.cast(tf.nn.bias_add(outputs, bias), self.output_dtype)


def _single(outputs):
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def _is_functional(layer) -> bool:
    """A Functional model whose call is Functional's own: what walking its graph computes."""
    if not isinstance(layer, keras.Model) or not all(hasattr(layer, name) for name in _WALKED):
        return False
    functional = next((cls for cls in type(layer).__mro__ if cls.__name__ == "Functional"), None)
    return functional is not None and type(layer).call is functional.call


def _foldable_pairs(model: keras.Model) -> list[tuple]:
    """(convolution, BatchNormalization) pairs that may be folded in `model`'s graph: the
    convolution is linear and channels-last, is called once in this graph, and its output goes
    to that one BatchNormalization (over the channels) and nowhere else, the model's outputs
    included."""
    readers: dict[int, list] = {}  # id(tensor) -> the layers (None: the model's output) reading it
    calls: dict[int, int] = {}
    nodes = [node for depth in model._nodes_by_depth.values() for node in depth]
    for node in nodes:
        calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
        for tensor in node.arguments.keras_tensors:
            readers.setdefault(id(tensor), []).append(node.operation)
    for tensor in model.outputs:
        readers.setdefault(id(tensor), []).append(None)
    pairs = []
    for node in nodes:
        conv = node.operation
        if type(conv) not in _CONVOLUTIONS or calls[id(conv)] != 1 or len(node.outputs) != 1:
            continue
        config = conv.get_config()
        if config.get("activation") != "linear" or config.get("data_format") != "channels_last":
            continue
        consumers = readers.get(id(node.outputs[0]), [])
        if len(consumers) != 1 or type(consumers[0]) is not keras.layers.BatchNormalization:
            continue
        norm = consumers[0]
        if calls[id(norm)] == 1 and norm.axis in (-1, len(node.outputs[0].shape) - 1):
            pairs.append((conv, norm))
    return pairs


def _folded_weights(conv, norm, depthwise: bool) -> tuple[np.ndarray, np.ndarray]:
    def value(variable):
        return ops.convert_to_numpy(variable).astype(np.float64)

    kernel = value(conv.kernel)
    channels = kernel.shape[-2] * kernel.shape[-1] if depthwise else kernel.shape[-1]
    gamma = value(norm.gamma) if norm.scale else np.ones(channels)
    beta = value(norm.beta) if norm.center else np.zeros(channels)
    bias = value(conv.bias) if conv.use_bias else np.zeros(channels)
    scale = gamma / np.sqrt(value(norm.moving_variance) + norm.epsilon)
    # A depthwise kernel is [h, w, in, multiplier]; its output channel c * multiplier + m is [.., c, m].
    kernel = kernel * scale.reshape(kernel.shape[-2:] if depthwise else -1)
    shift = (bias - value(norm.moving_mean)) * scale + beta
    return kernel.astype(np.float32), shift.astype(np.float32)
