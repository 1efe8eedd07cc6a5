"""What a trained run says about image files: `predict` and its library.

The run directory knows everything a prediction needs: the model (best.keras or
final.keras), its class names (results.json) and its preprocessing (preprocessing.json:
image size and decode options). So a user names the run and the images, and never
repeats a training flag. A model that export_model wrote (.tflite, .onnx, a SavedModel
folder) runs with its own runtime (inference.runtimes) and needs no run: its record
holds the class names and the preprocessing.

Images go through the run's own decode and resize (data.preprocessing), in parallel,
batched and prefetched, so predictions see exactly what training saw. A file that
cannot be read or decoded is dropped from the stream by index (file_index's
decoded_by_index, as the folder index's decode check does) and comes back as a row
that says why: one bad file never stops the others.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import tensorflow as tf

from tfpipe.data import file_index, folder
from tfpipe.data import preprocessing as preprocessing_lib
from tfpipe.errors import TfpipeError
from tfpipe.inference import runtimes
from tfpipe.runs import files as run_files

MODEL_CHOICES = tuple(run_files.MODEL_FILES)  # best, final; or a path to a .keras or exported file
DEFAULT_MODEL = MODEL_CHOICES[0]
MODEL_HELP = "best, final, a path to a .keras file, or a .tflite, .onnx or SavedModel folder that export_model wrote"
DEFAULT_TOP_K = 3  # classes listed per image
DEFAULT_BATCH_SIZE = 32
FORMATS = (".csv", ".json")
LOGITS, PROBABILITIES = "logits", "probabilities"  # what a model outputs


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """A model with what it was trained on. `model` is a keras.Model, or the runner of an
    exported file (tfpipe.inference.runtimes): anything that maps uint8 images to logits."""

    model: Any
    class_names: tuple[str, ...]
    preprocessing: preprocessing_lib.Preprocessing  # how its images were decoded and resized in training
    path: str
    outputs: str = LOGITS  # what the model gives: LOGITS (Keras) or PROBABILITIES (export_model's files)

    @property
    def image_size(self) -> int:
        return self.preprocessing.image_size

    @property
    def runtime(self) -> str:
        """keras, litert, onnx or saved_model."""
        return getattr(self.model, "runtime", "keras")

    def outputs_of(self, images) -> np.ndarray:
        """What the model gives for uint8 images: logits or probabilities (self.outputs)."""
        return np.asarray(self._forward(images))

    def probabilities(self, images) -> np.ndarray:
        """(n, classes) probabilities; a two-class model's single logit gives both."""
        outputs = self.outputs_of(images)
        return outputs.astype(np.float64) if self.outputs == PROBABILITIES else probabilities_from_logits(outputs)

    @functools.cached_property
    def _forward(self):
        if self.runtime != "keras":
            return self.model
        # Compiled once: an eager call per batch took twice the time. Not predict_on_batch:
        # for a model built under a MirroredStrategy it splits the batch over the replicas
        # and returned twice the rows for a partial batch (TF 2.21, Keras 3).
        return tf.function(lambda images: self.model(images, training=False), reduce_retracing=True)


def probabilities_from_logits(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    if logits.shape[-1] == 1:
        positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return np.stack([1.0 - positive, positive], axis=1)
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def load(model_dir: str | None, which: str = DEFAULT_MODEL) -> TrainedModel:
    """The run's model (best, final, a .keras file, or a file export_model wrote) and what
    it was trained on; every problem is a one-line TfpipeError.

    Example::

        trained = tfpipe.load_run("runs/pets")                                      # best.keras
        exported = tfpipe.load_run(None, "runs/pets/exported/best_int8.tflite")    # run by LiteRT
        print(trained.class_names, trained.preprocessing.image_size)

    An exported model carries its class names and preprocessing in the record beside it, so
    it needs no model_dir; given one, the two must agree.
    """
    check_model_named(model_dir, which)
    exported = None if which in MODEL_CHOICES else runtimes.format_of(which)
    if exported:
        return _load_exported(model_dir, which, exported)
    import keras

    import tfpipe  # noqa: F401  (registers tfpipe's Keras objects for loading)

    results = run_files.read_results(model_dir)
    class_names = tuple(results.get("class_names") or ())
    if which in MODEL_CHOICES:
        path = os.path.join(model_dir, run_files.MODEL_FILES[which])
        if not os.path.isfile(path):
            raise TfpipeError(f"--model={which}: {path} does not exist; the run saved no {which} model")
    else:
        path = which
        if not os.path.isfile(path):
            raise TfpipeError(
                f"--model={which}: no such file; give best, final, a .keras file, or a .tflite, .onnx or "
                "SavedModel folder that export_model wrote"
            )
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a file that is not a model
        raise TfpipeError(f"--model={which}: {path} is not a Keras model ({_first_line(error)})") from None
    preprocessing = run_preprocessing(model_dir)
    _check_fits(model.input_shape, model.output_shape[-1], class_names, path, preprocessing, LOGITS)
    return TrainedModel(model, class_names, preprocessing, path)


def run_preprocessing(model_dir: str) -> preprocessing_lib.Preprocessing:
    """The run's preprocessing: RUN/preprocessing.json, or for a run written before that file
    existed, the settings its checkpoint recorded (the same values)."""
    path = os.path.join(model_dir, run_files.PREPROCESSING)
    if os.path.isfile(path):
        return preprocessing_lib.Preprocessing.from_record(run_files.read_json(path), path)
    settings = run_files.read_run_settings(model_dir)
    try:
        return preprocessing_lib.Preprocessing(
            int(settings["pipeline.image_size"]), bool(settings["pipeline.jpeg_dct_scaling"])
        )
    except (KeyError, TypeError, ValueError):
        raise TfpipeError(f"--model_dir={model_dir} records no image size or decode options; train again") from None


def check_model_named(model_dir: str | None, which: str) -> None:
    """A model needs its run, unless `which` is a file export_model wrote: TfpipeError otherwise."""
    if not model_dir and not runtimes.format_of(which):
        raise TfpipeError("--model_dir is required: the directory a train run wrote (or --model=an exported model)")


def _load_exported(model_dir: str | None, path: str, model_format: str) -> TrainedModel:
    if not os.path.exists(path):
        raise TfpipeError(f"--model={path}: no such file; export_model writes them into RUN/{run_files.EXPORTED_DIR}/")
    record_path = run_files.export_record(path)
    record = run_files.read_json(record_path) if os.path.isfile(record_path) else {}
    class_names = tuple(record.get("class_names") or ())
    preprocessing = None
    if "preprocessing" in record:
        preprocessing = preprocessing_lib.Preprocessing.from_record(record["preprocessing"], record_path)
    if model_dir:
        preprocessing = preprocessing or run_preprocessing(model_dir)
        run_names = tuple(run_files.read_results(model_dir).get("class_names") or ())
        if class_names and class_names != run_names:
            raise TfpipeError(
                f"{path} was exported from a model of classes {list(class_names)}, but --model_dir={model_dir} "
                f"was trained on {list(run_names)}; give the run it was exported from"
            )
        class_names = run_names
    if not class_names or preprocessing is None:
        raise TfpipeError(
            f"--model={path}: its record {record_path} (class names, preprocessing) is missing or older than "
            "this tfpipe; give --model_dir of the run it was exported from, or export it again with export_model"
        )
    # What the file gives: its record says; export_model has written probabilities since records
    # say "kind", logits before. A file without its record is taken to be of today's export.
    outputs = record.get("output", {}).get("kind", LOGITS) if record else PROBABILITIES
    runner = runtimes.open_model(path, model_format)
    _check_fits((None, runner.image_size, runner.image_size, 3), runner.outputs, class_names, path, preprocessing, outputs)
    return TrainedModel(runner, class_names, preprocessing, path, outputs)


def _check_fits(input_shape, outputs, class_names, path, preprocessing, kind) -> None:
    shape = input_shape
    if len(shape) != 4 or shape[1] is None or shape[1] != shape[2] or shape[3] != 3:
        raise TfpipeError(f"{path} takes inputs of shape {shape}; predict needs square RGB images")
    if shape[1] != preprocessing.image_size:
        raise TfpipeError(
            f"{path} takes {shape[1]} px images, but its run preprocessed them to {preprocessing.image_size} px; "
            "give the model and the run that trained it"
        )
    expected = len(class_names) if kind == PROBABILITIES or len(class_names) != 2 else 1
    if outputs != expected:
        raise TfpipeError(
            f"{path} has {outputs} outputs but the run's results.json names {len(class_names)} classes; "
            "give a model trained in this --model_dir"
        )


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())[:200]


def find_images(inputs: Iterable[str]) -> list[str]:
    """Image files, folders (searched recursively) and glob patterns -> the files, in order.
    A file named directly is kept whatever its extension: if it is no image, its row says so."""
    paths: list[str] = []
    for entry in inputs:
        if os.path.isdir(entry):
            paths += folder.images_below(entry)
        elif glob.has_magic(entry):
            paths += sorted(path for path in glob.glob(entry, recursive=True) if os.path.isfile(path))
        else:
            paths.append(entry)
    if not paths:
        raise TfpipeError(
            f"no images matched {' '.join(inputs) or '(nothing given)'}; give image files, folders or globs"
        )
    return list(dict.fromkeys(paths))  # each file once, first mention first


@dataclasses.dataclass(frozen=True)
class Prediction:
    path: str
    top: tuple[tuple[str, float], ...] = ()  # (class name, probability), most probable first
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def predict(
    trained: TrainedModel,
    paths: list[str],
    top_k: int = DEFAULT_TOP_K,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """One Prediction per path, in order; `on_batch(images)` after each batch.

    Example::

        for row in tfpipe.predict(tfpipe.load_run("runs/pets"), ["photo.jpg", "broken.jpg"]):
            print(row.path, row.top[0] if row.ok else row.error)   # ('cat', 0.97), or why it failed
    """
    top_k = max(1, min(top_k, len(trained.class_names)))
    probabilities = np.full((len(paths), len(trained.class_names)), np.nan)
    for indices, images in decoded_batches(paths, trained.preprocessing, batch_size):
        probabilities[indices] = trained.probabilities(images)
        if on_batch:
            on_batch(len(indices))
    rows = []
    for path, row in zip(paths, probabilities):
        if np.isnan(row[0]):
            rows.append(Prediction(path, error=_why_unusable(path)))
            continue
        best = np.argsort(-row, kind="stable")[:top_k]
        rows.append(Prediction(path, tuple((trained.class_names[i], float(row[i])) for i in best)))
    return rows


def decoded_batches(paths: list[str], preprocessing: preprocessing_lib.Preprocessing, batch_size: int):
    """(indices, uint8 images) batches of the files that decode, as the run's training decoded them;
    the others are left out."""
    decoded = file_index.decoded_by_index(paths, preprocessing.decode)
    return decoded.batch(batch_size).prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _why_unusable(path: str) -> str:
    if not os.path.exists(path):
        return "no such file"
    if not os.path.isfile(path):
        return "not a file"
    if not os.access(path, os.R_OK):
        return "not readable"
    return "not an image TensorFlow can decode (JPEG, PNG, BMP or GIF)"


def as_records(rows: list[Prediction]) -> list[dict]:
    """JSON-ready rows: the prediction, its probability and the top-k list, or the error."""
    records = []
    for row in rows:
        if row.ok:
            (name, probability), *_ = row.top
            records.append(
                {
                    "path": row.path,
                    "class": name,
                    "probability": probability,
                    "top_k": [{"class": c, "probability": p} for c, p in row.top],
                    "error": None,
                }
            )
        else:
            records.append({"path": row.path, "class": None, "probability": None, "top_k": [], "error": row.error})
    return records


def check_output(path: str) -> None:
    """A .csv or .json file in an existing folder: checked before any image is read."""
    if os.path.splitext(path)[1].lower() not in FORMATS:
        raise TfpipeError(f"--output={path}: give a .csv or .json file")
    folder_of_output = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder_of_output) or not os.access(folder_of_output, os.W_OK):
        raise TfpipeError(f"--output={path}: cannot write into {folder_of_output}; give a file in a writable folder")


def write(rows: list[Prediction], path: str) -> None:
    """CSV or JSON, by the file's extension."""
    check_output(path)
    extension = os.path.splitext(path)[1].lower()
    records = as_records(rows)
    with open(path, "w", newline="") as out:
        if extension == ".json":
            json.dump(records, out, indent=2)
            return
        k = max((len(r["top_k"]) for r in records), default=1)
        header = ["path", "class", "probability"]
        header += [f"{field}_{i}" for i in range(1, k + 1) for field in ("class", "probability")] + ["error"]
        writer = csv.writer(out)
        writer.writerow(header)
        for r in records:
            ranked = [value for entry in r["top_k"] for value in (entry["class"], f"{entry['probability']:.6f}")]
            ranked += [""] * (2 * k - len(ranked))
            probability = "" if r["probability"] is None else f"{r['probability']:.6f}"
            writer.writerow([r["path"], r["class"] or "", probability, *ranked, r["error"] or ""])


def table(rows: list[Prediction]) -> str:
    """A readable table: path, prediction with probability, then the runners-up."""
    width = min(max(len(row.path) for row in rows), 60)
    lines = []
    for row in rows:
        shown = row.path if len(row.path) <= width else "..." + row.path[-(width - 3) :]
        if row.ok:
            ranked = "  ".join(f"{name} {probability:.3f}" for name, probability in row.top)
            lines.append(f"{shown:<{width}}  {ranked}")
        else:
            lines.append(f"{shown:<{width}}  error: {row.error}")
    return "\n".join(lines)
