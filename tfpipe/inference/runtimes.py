"""Running an exported model with its own runtime, as a phone, a browser or a server
without Keras would: LiteRT (.tflite, ai-edge-litert), ONNX (.onnx, onnxruntime) or a
SavedModel folder (TensorFlow).

Every runner takes what the Keras model takes, uint8 images (batch, size, size, 3),
and returns the file's float32 outputs: one probability per class for the files
export_model writes (logits for files exported before it added its probability layer;
the file's record says which, predict.TrainedModel reads it). A quantized output is
turned back into floats with the scale and zero point the file holds.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from tfpipe.errors import TfpipeError

LITERT = "litert"
ONNX = "onnx"
SAVED_MODEL = "saved_model"
EXTENSIONS = {LITERT: ".tflite", ONNX: ".onnx", SAVED_MODEL: ""}  # a SavedModel is a folder
# format -> (module to import, the PyPI package that provides it)
RUNTIME_PACKAGES = {LITERT: ("ai_edge_litert", "ai-edge-litert"), ONNX: ("onnxruntime", "onnxruntime")}
EXPORT_EXTRA = "pip install 'tfpipe[export]'"


def format_of(path: str) -> str | None:
    """The exported format a path holds, by its name (a SavedModel: a folder with saved_model.pb); None otherwise."""
    for name, extension in EXTENSIONS.items():
        if extension and path.lower().endswith(extension):
            return name
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SAVED_MODEL
    return None


def require_package(module: str, package: str, needed_for: str) -> None:
    """TfpipeError naming the package to install when `module` cannot be imported."""
    if importlib.util.find_spec(module) is None:
        raise TfpipeError(f"{needed_for} needs the {package} package, which is not installed; {EXPORT_EXTRA}")


def open_model(path: str, model_format: str):
    """A runner for an exported model: runner(uint8 images) -> its outputs, with .image_size and .outputs."""
    if model_format in RUNTIME_PACKAGES:
        require_package(*RUNTIME_PACKAGES[model_format], needed_for=f"running {os.path.basename(path)}")
    runner = {LITERT: LiteRTRunner, ONNX: OnnxRunner, SAVED_MODEL: SavedModelRunner}[model_format]
    try:
        return runner(path)
    except TfpipeError:
        raise
    except Exception as error:  # noqa: BLE001 - each runtime raises its own types for a file it cannot read
        reason = " ".join(str(error).split())[:200]
        raise TfpipeError(f"--model={path} is not a {model_format} model its runtime can load ({reason})") from None


def _check_input(path: str, shape, dtype: str) -> int:
    """The square image size of an exported model's uint8 input; TfpipeError for any other input."""
    if len(shape) != 4 or shape[1] != shape[2] or shape[3] != 3 or not isinstance(shape[1], (int, np.integer)):
        raise TfpipeError(f"{path} takes inputs of shape {list(shape)}; predict needs square RGB images")
    if dtype != "uint8":
        raise TfpipeError(f"{path} takes {dtype} inputs; tfpipe's exported models take uint8 images")
    return int(shape[1])


class LiteRTRunner:
    runtime = LITERT

    def __init__(self, path: str):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=path, num_threads=os.cpu_count())
        self._input = self._interpreter.get_input_details()[0]
        self._output = self._interpreter.get_output_details()[0]
        self.image_size = _check_input(path, list(self._input["shape"]), np.dtype(self._input["dtype"]).name)
        self.outputs = int(self._output["shape"][-1])
        self._batch = None

    def __call__(self, images) -> np.ndarray:
        images = np.ascontiguousarray(images, dtype=np.uint8)
        if images.shape[0] != self._batch:  # the file holds batch 1; the interpreter resizes to each batch
            self._interpreter.resize_tensor_input(self._input["index"], images.shape)
            self._interpreter.allocate_tensors()
            self._batch = images.shape[0]
        self._interpreter.set_tensor(self._input["index"], images)
        self._interpreter.invoke()
        outputs = self._interpreter.get_tensor(self._output["index"])
        scale, zero_point = self._output["quantization"]
        if scale:
            return (outputs.astype(np.float32) - zero_point) * scale
        return outputs.astype(np.float32)


class OnnxRunner:
    runtime = ONNX

    def __init__(self, path: str):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: it warns about every initializer it folds
        self._session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        (image,) = self._session.get_inputs()
        self._input_name = image.name
        dtype = image.type.removeprefix("tensor(").removesuffix(")")
        self.image_size = _check_input(path, image.shape, dtype)
        self.outputs = int(self._session.get_outputs()[0].shape[-1])

    def __call__(self, images) -> np.ndarray:
        feed = {self._input_name: np.ascontiguousarray(images, dtype=np.uint8)}
        return self._session.run(None, feed)[0].astype(np.float32)


class SavedModelRunner:
    runtime = SAVED_MODEL

    def __init__(self, path: str):
        import tensorflow as tf

        loaded = tf.saved_model.load(path)
        self._serve = loaded.signatures["serving_default"]
        (spec,) = self._serve.structured_input_signature[1].values()
        self._input_name = next(iter(self._serve.structured_input_signature[1]))
        self.image_size = _check_input(path, spec.shape.as_list(), spec.dtype.name)
        (output,) = self._serve.structured_outputs.values()
        self.outputs = int(output.shape[-1])
        self._loaded = loaded  # the signature's variables live as long as this object

    def __call__(self, images) -> np.ndarray:
        (outputs,) = self._serve(**{self._input_name: np.asarray(images, dtype=np.uint8)}).values()
        return np.asarray(outputs, dtype=np.float32)
