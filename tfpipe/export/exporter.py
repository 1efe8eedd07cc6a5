"""A run's model -> an exported file, labels.txt and a JSON record beside it.

    RUN/exported/best_int8.tflite        the model: uint8 images in, logits out
    RUN/exported/best_int8.tflite.json   format, quantization, input, output, class names,
                                         bytes, sha256, what it came from, the command
    RUN/exported/labels.txt              class i on line i + 1, as LiteRT and MediaPipe read labels

Every check that can fail comes before the model is loaded: format, quantization, the
packages they need, the output path, the representative images. The file is written
through a temporary sibling (tfpipe.atomic), so a killed export leaves no half file.
Then the exported file runs once, with its own runtime, on images of the run's
validation split, and the record says how often it agrees with the Keras model.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os

import numpy as np

from tfpipe import atomic
from tfpipe.errors import TfpipeError
from tfpipe.export import formats
from tfpipe.inference import evaluation, predict, runtimes
from tfpipe.models.weights import sha256_of
from tfpipe.paths import ensure_writable_dir
from tfpipe.runs import files as run_files

DEFAULT_REPRESENTATIVE_IMAGES = 300
# Fewer calibration images leave the activation ranges to chance: the tails of a
# layer's activations show up only over many images.
MIN_REPRESENTATIVE_IMAGES = 20
CHECK_IMAGES = 64  # validation images the exported file and the Keras model both classify


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    model_dir: str
    format: str = runtimes.LITERT
    quantize: str = "none"
    model: str = predict.DEFAULT_MODEL  # best or final
    output: str | None = None  # default: RUN/exported/<model>_<precision>.<extension>
    representative_images: int = DEFAULT_REPRESENTATIVE_IMAGES
    overwrite: bool = False
    data_dir: str | None = None  # where the run's dataset is read, as given to train


def export_run(config: ExportConfig, command: str | None = None, log=print) -> dict:
    """Exports the run's model; returns the record written beside it."""
    formats.check(config.format, config.quantize)
    if config.model not in predict.MODEL_CHOICES:
        raise TfpipeError(f"--model={config.model}: export_model exports a run's best or final model")
    calibrated = config.quantize == formats.CALIBRATED
    if calibrated and config.representative_images < MIN_REPRESENTATIVE_IMAGES:
        raise TfpipeError(
            f"--representative_images={config.representative_images} is too few to calibrate int8 ranges; "
            f"give at least {MIN_REPRESENTATIVE_IMAGES} (default {DEFAULT_REPRESENTATIVE_IMAGES})"
        )
    path = config.output or os.path.join(
        config.model_dir, run_files.EXPORTED_DIR, formats.file_name(config.model, config.format, config.quantize)
    )
    _check_output(path, config.format, config.overwrite)
    settings = run_files.read_run_settings(config.model_dir)
    check_split = settings.get("val_split") or settings["train_split"]
    source, metadata = evaluation.run_source(
        settings, config.data_dir, {"train": "train_split"}, train=settings["train_split"]
    )
    train_split = settings["train_split"]
    count = _representative_count(config, train_split, metadata.num_examples["train"], log) if calibrated else None
    trained = predict.load(config.model_dir, config.model)
    representative = _images(source, train_split, trained.image_size, count) if calibrated else None

    from tfpipe.models import classifier

    log(f"Exporting {trained.path} as {config.format}, quantization {config.quantize}, to {path}")
    with atomic.replacing(path, what=f"the {config.format} export") as temporary:
        formats.write(
            classifier.inference_graph(trained.model), temporary, config.format, config.quantize, representative
        )
    labels = os.path.join(os.path.dirname(os.path.abspath(path)), run_files.LABELS)
    with atomic.replacing(labels) as temporary, open(temporary, "w") as out:
        out.write("".join(f"{name}\n" for name in trained.class_names))
    record = {
        "format": config.format,
        "quantization": config.quantize,
        "file": os.path.basename(path.rstrip(os.sep)),
        "bytes": _size(path),
        "sha256": _sha256(path),
        "input": {
            "name": formats.INPUT_NAME,
            "dtype": "uint8",
            "shape": [None, trained.image_size, trained.image_size, 3],
        },
        "output": _output_meaning(trained.class_names),
        "image_size": trained.image_size,
        "class_names": list(trained.class_names),
        "labels": run_files.LABELS,
        "exported_from": {"model": trained.path, "sha256": _sha256(trained.path)},
        "representative_images": count,
        "check": _check_against_keras(trained, path, config.format, source, check_split),
        "versions": formats.converter_versions(config.format),
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(run_files.export_record(path), record)
    return record


def _representative_count(config: ExportConfig, train_split: str, available: int, log) -> int:
    """How many training images calibrate int8: as many as asked, or all the split holds."""
    if available < MIN_REPRESENTATIVE_IMAGES:
        raise TfpipeError(
            f"the training split {train_split} holds {available} images; int8 calibration needs "
            f"at least {MIN_REPRESENTATIVE_IMAGES}: export --quantize=dynamic instead, or train on more images"
        )
    if available < config.representative_images:
        log(f"Calibrating on all {available} images of {train_split} (asked for {config.representative_images})")
    return min(config.representative_images, available)


def _check_output(path: str, model_format: str, overwrite: bool) -> None:
    extension = runtimes.EXTENSIONS[model_format]
    if extension and not path.lower().endswith(extension):
        raise TfpipeError(f"--output={path}: a {model_format} model is a {extension} file; give a path ending in it")
    if not extension and os.path.splitext(path)[1].lower() in (".tflite", ".onnx", ".keras", ".json"):
        raise TfpipeError(f"--output={path}: a SavedModel is a folder; give a folder path without that extension")
    if os.path.lexists(path) and not overwrite:
        raise TfpipeError(f"--output={path} exists; pass --overwrite to replace it, or give another --output")
    ensure_writable_dir(os.path.dirname(os.path.abspath(path)), flag="output")


def _images(source, split: str, image_size: int, count: int):
    """A function giving the first `count` uint8 images of `split`, decoded and resized by the
    training pipeline (tfds and folder splits are in shuffled order, so the first images
    mix the classes)."""
    from tfpipe.data import pipeline

    config = pipeline.PipelineConfig(image_size=image_size, batch_size=1, cache=pipeline.CACHE_NONE)

    def images():
        batches = pipeline.build(source, split, config, training=False, max_examples=count)
        for batch, _ in batches.as_numpy_iterator():
            yield batch[0]

    return images


def _check_against_keras(trained, path, model_format, source, split) -> dict:
    """The exported file and the Keras model on the first validation images: how often their
    top class agrees and the largest logit difference. Skipped (None) without the runtime."""
    if not runtimes.runtime_installed(model_format):
        return None
    images = np.stack(list(_images(source, split, trained.image_size, CHECK_IMAGES)()))
    exported = runtimes.open_model(path, model_format)
    keras_logits, exported_logits = trained.logits(images), exported(images)
    agree = predict.probabilities_from_logits(keras_logits).argmax(1) == predict.probabilities_from_logits(
        exported_logits
    ).argmax(1)
    return {
        "images": int(len(images)),
        "split": split,
        "top1_agreement": float(agree.mean()),
        "max_logit_difference": float(np.abs(keras_logits - exported_logits).max()),
    }


def _output_meaning(class_names) -> dict:
    if len(class_names) == 2:
        meaning = f"one logit: sigmoid(logit) is the probability of {class_names[1]!r}, 1 - it of {class_names[0]!r}"
        return {"dtype": "float32", "shape": [None, 1], "meaning": meaning}
    return {
        "dtype": "float32",
        "shape": [None, len(class_names)],
        "meaning": "logits: softmax gives the class probabilities",
    }


def _files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)


def _size(path: str) -> int:
    return sum(os.path.getsize(name) for name in _files(path))


def _sha256(path: str) -> str:
    """Of the file, or of a folder's files: their relative paths and sha256s, in path order."""
    if os.path.isfile(path):
        return sha256_of(path)
    listing = "".join(f"{os.path.relpath(name, path)} {sha256_of(name)}\n" for name in _files(path))
    return hashlib.sha256(listing.encode()).hexdigest()
