"""Each export format and quantization, on Keras' own export (Model.export).

    litert       a .tflite file for the LiteRT interpreter (phones, microcontrollers, browsers)
    onnx         a .onnx file for onnxruntime and every ONNX runtime (tf2onnx under Keras)
    saved_model  a SavedModel folder for TF Serving; not quantized

    none      float32 weights and arithmetic
    float16   float16 weights (LiteRT computes in float32 on a CPU; half the file)
    dynamic   int8 weights, no calibration: LiteRT quantizes activations on the fly where a
              kernel can; ONNX keeps float32 arithmetic (int8 weights dequantized at run time)
    int8      full integer: weights and activations in int8, their ranges calibrated on
              representative images; the model still takes uint8 images and gives float logits

Every exported model takes uint8 images (batch, size, size, 3), as the Keras model does,
so a camera's bytes go straight in. LiteRT is held to its built-in kernels (no TensorFlow
ops, which the ai-edge-litert interpreter cannot run), so a model that would need them
fails at export rather than on the device. Keras exports ONNX in float32; its quantized
forms: float16 by onnxruntime's converter (inputs and outputs kept), dynamic by storing
int8 weights behind DequantizeLinear (below), int8 by onnxruntime's quantize_static in QDQ
form with per-channel weights.
"""

from __future__ import annotations

import importlib.metadata
import os
import tempfile
from collections.abc import Callable, Iterator

import numpy as np

from tfpipe.errors import TfpipeError
from tfpipe.inference.runtimes import EXTENSIONS, LITERT, ONNX, SAVED_MODEL, require_package

FORMATS = tuple(EXTENSIONS)  # litert, onnx, saved_model
QUANTIZATIONS = ("none", "float16", "dynamic", "int8")
CALIBRATED = "int8"  # the quantization that needs representative images
INPUT_NAME = "image"

# format -> [(module, PyPI package)] that writing it needs
_EXPORT_PACKAGES = {
    ONNX: [("tf2onnx", "tf2onnx"), ("onnx", "onnx")],
}
_ONNX_QUANTIZE_PACKAGES = [("onnxruntime", "onnxruntime")]


def check(model_format: str, quantize: str) -> None:
    """One-line TfpipeError for a format or quantization tfpipe does not export, or a
    missing package that writing it needs; before any model is loaded."""
    if model_format not in FORMATS:
        raise TfpipeError(f"--format={model_format!r} is not an export format; use one of {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise TfpipeError(f"--quantize={quantize!r} is not known; use one of {', '.join(QUANTIZATIONS)}")
    if model_format == SAVED_MODEL and quantize != "none":
        raise TfpipeError(
            f"--quantize={quantize} applies to litert and onnx; a SavedModel keeps float32 (--quantize=none)"
        )
    packages = _EXPORT_PACKAGES.get(model_format, [])
    if model_format == ONNX and quantize != "none":
        packages = packages + _ONNX_QUANTIZE_PACKAGES
    for module, package in packages:
        require_package(module, package, needed_for=f"--format={model_format} --quantize={quantize}")


def file_name(which: str, model_format: str, quantize: str) -> str:
    """best_int8.tflite, final_float32.onnx, best_saved_model: the default name in RUN/exported/."""
    if model_format == SAVED_MODEL:
        return f"{which}_saved_model"
    precision = "float32" if quantize == "none" else quantize
    return f"{which}_{precision}{EXTENSIONS[model_format]}"


def converter_versions(model_format: str) -> dict:
    """The versions of what wrote the file, for its record."""
    packages = ["tensorflow", "keras"] + [package for _, package in _EXPORT_PACKAGES.get(model_format, [])]
    if model_format == ONNX:
        packages.append("onnxruntime")
    return {package: _version(package) for package in packages}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def write(
    model,
    path: str,
    model_format: str,
    quantize: str,
    representative: Callable[[], Iterator[np.ndarray]] | None = None,
) -> None:
    """Writes `model` (uint8 images -> logits) to `path` in `model_format`.

    representative: for int8, a function giving an iterator of single uint8 images
    (size, size, 3) to calibrate the activation ranges on.
    """
    import tensorflow as tf

    size = model.input_shape[1]
    signature = [tf.TensorSpec((None, size, size, 3), tf.uint8, name=INPUT_NAME)]
    if model_format == SAVED_MODEL:
        model.export(path, format="tf_saved_model", input_signature=signature, verbose=False)
    elif model_format == LITERT:
        model.export(
            path,
            format="litert",
            input_signature=signature,
            verbose=False,
            **_litert_settings(quantize, representative),
        )
    else:
        _write_onnx(model, path, signature, quantize, representative)


def _litert_settings(quantize: str, representative) -> dict:
    """The TFLiteConverter settings of a quantization (Keras passes them through)."""
    import tensorflow as tf

    builtins = {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]}
    if quantize == "none":
        return {"target_spec": builtins}
    optimized = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if quantize == "float16":
        return {**optimized, "target_spec": {**builtins, "supported_types": [tf.float16]}}
    if quantize == "dynamic":
        return {**optimized, "target_spec": builtins}
    return {
        **optimized,
        "representative_dataset": lambda: ([image[np.newaxis]] for image in representative()),
        "target_spec": {"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]},
        "inference_input_type": tf.uint8,  # the camera's bytes, as the Keras model takes them
        "inference_output_type": tf.float32,  # logits, as the Keras model gives them
    }


def _write_onnx(model, path: str, signature, quantize: str, representative) -> None:
    with tempfile.TemporaryDirectory(prefix="tfpipe-onnx-") as scratch:
        float_path = path if quantize == "none" else os.path.join(scratch, "float32.onnx")
        try:
            model.export(float_path, format="onnx", input_signature=signature, verbose=False)
        except Exception as error:  # noqa: BLE001 - tf2onnx raises many types; all mean the same to the user
            reason = " ".join(str(error).split())[:300]
            versions = ", ".join(f"{name} {version}" for name, version in converter_versions(ONNX).items())
            raise TfpipeError(
                f"the ONNX export failed ({type(error).__name__}: {reason}) with {versions}; "
                "export --format=litert or --format=saved_model instead"
            ) from None
        if quantize != "none":
            _quantize_onnx(float_path, path, scratch, quantize, representative)


def _quantize_onnx(float_path: str, path: str, scratch: str, quantize: str, representative) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    if quantize == "float16":
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(onnx.load(float_path), keep_io_types=True), path)
        return
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Shape inference and graph folding first, as onnxruntime advises before quantizing
    # (its symbolic shape inference needs sympy and the shapes here are static).
    prepared = os.path.join(scratch, "prepared.onnx")
    quant_pre_process(float_path, prepared, skip_symbolic_shape=True)
    if quantize == "dynamic":
        _store_int8_weights(prepared, path)
        return

    class _Images(CalibrationDataReader):
        def __init__(self):
            self._images = iter(representative())

        def get_next(self):
            image = next(self._images, None)
            return None if image is None else {INPUT_NAME: image[np.newaxis]}

    quantize_static(
        prepared,
        path,
        _Images(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )


# As LiteRT's dynamic range quantization does: smaller weights (the stem convolution, the
# narrow depthwise kernels) stay float32, where int8 would cost accuracy and save little.
MIN_INT8_WEIGHT_ELEMENTS = 1024
# The axis of each weight's output channels: one int8 scale per channel.
_OUTPUT_CHANNEL_AXIS = {"Conv": 0, "MatMul": 1}


def _store_int8_weights(source: str, path: str) -> None:
    """ONNX dynamic: every Conv and MatMul weight of MIN_INT8_WEIGHT_ELEMENTS or more stored as
    symmetric per-channel int8 behind a DequantizeLinear, the arithmetic left in float32.

    Not onnxruntime's quantize_dynamic: on EfficientNet-Lite0 its integer convolutions
    (ConvInteger, activations quantized per call from the whole batch's range) scored 2-3
    test points below the Keras model, gave an image different outputs in different batches,
    and took 20-24 ms an image against float32's 4 (BUILD_NOTES.md, "Export formats")."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(source)
    graph = model.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    dequantized = []  # first in the graph: they read only initializers
    for node in graph.node:
        axis = _OUTPUT_CHANNEL_AXIS.get(node.op_type)
        name = node.input[1] if axis is not None and len(node.input) > 1 else None
        if name not in weights:  # not a stored weight, or one already dequantized for another node
            continue
        weight = numpy_helper.to_array(weights[name])
        if weight.size < MIN_INT8_WEIGHT_ELEMENTS or weight.dtype != np.float32 or weight.ndim <= axis:
            continue
        quantized, scale = _symmetric_int8(weight, axis)
        graph.initializer.remove(weights.pop(name))
        graph.initializer.extend(
            [
                numpy_helper.from_array(quantized, f"{name}_int8"),
                numpy_helper.from_array(scale, f"{name}_scale"),
                numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zero_point"),
            ]
        )
        inputs = [f"{name}_int8", f"{name}_scale", f"{name}_zero_point"]
        dequantized.append(helper.make_node("DequantizeLinear", inputs, [name], name=f"{name}_dequantize", axis=axis))
    nodes = dequantized + list(graph.node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def _symmetric_int8(weight: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weight, float32 scale per channel of `axis`): zero stays exactly zero."""
    others = tuple(i for i in range(weight.ndim) if i != axis)
    largest = np.abs(weight).max(axis=others)
    scale = np.where(largest > 0, largest / 127.0, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.clip(np.round(weight / scale.reshape(shape)), -127, 127).astype(np.int8)
    return quantized, scale
