"""A run's model -> an exported file, labels.txt and a JSON record beside it.

    RUN/exported/best_int8.tflite        the model: uint8 images in, one probability per class
                                         out; a .tflite also carries TFLite metadata and
                                         labels.txt, so MediaPipe Tasks runs it as it is
    RUN/exported/best_int8.tflite.json   format, quantization, what the input must be (the
                                         run's preprocessing, in words), the output, class
                                         names, bytes, sha256, the check, the command
    RUN/exported/labels.txt              class i on line i + 1, as LiteRT and MediaPipe read labels

Every check that can fail before the model loads comes first: format, quantization, the
packages that write and run it, the output path, the representative images. The file is
written to a temporary sibling (tfpipe.atomic) and checked there: it and the Keras model
classify the run's validation split (up to check_images images, decoded as training
decoded them), and an exported model whose accuracy falls more than max_accuracy_drop
points below Keras' is refused, its file removed, nothing left at the output path. Only a
file that passes takes the output's name.
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
DEFAULT_CHECK_IMAGES = 1000  # validation images the exported file and the Keras model both classify
# How far, in accuracy points, an exported file may fall below the Keras model by default:
# weights in int8 cost a little (measured: BUILD_NOTES.md, "Sizes and speed"); float ones nothing.
MAX_ACCURACY_DROP = {"none": 0.5, "float16": 0.5, "dynamic": 2.0, "int8": 2.0}
_CHECK_BATCH = 32


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    model_dir: str
    format: str = runtimes.LITERT
    quantize: str = "none"
    model: str = predict.DEFAULT_MODEL  # best or final
    output: str | None = None  # default: RUN/exported/<model>_<precision>.<extension>
    representative_images: int = DEFAULT_REPRESENTATIVE_IMAGES
    check_images: int = DEFAULT_CHECK_IMAGES
    max_accuracy_drop: float | None = None  # points; None: MAX_ACCURACY_DROP of the quantization
    overwrite: bool = False
    data_dir: str | None = None  # where the run's dataset is read, as given to train

    @property
    def accuracy_bound(self) -> float:
        return MAX_ACCURACY_DROP[self.quantize] if self.max_accuracy_drop is None else self.max_accuracy_drop


def export_run(config: ExportConfig, command: str | None = None, log=print) -> dict:
    """Exports the run's model, checked against it; returns the record written beside it.
    TfpipeError, with no file left at the output, when the check fails.

    Example::

        record = tfpipe.export_run(tfpipe.ExportConfig("runs/pets", quantize="int8"))
        print(record["file"], record["check"]["exported_accuracy"], record["input"]["expects"])
    """
    _check_settings(config)
    path = config.output or os.path.join(
        config.model_dir, run_files.EXPORTED_DIR, formats.file_name(config.model, config.format, config.quantize)
    )
    _check_output(path, config.format, config.overwrite)
    settings = run_files.read_run_settings(config.model_dir)
    check_split = settings.get("val_split") or settings["train_split"]
    source, metadata = evaluation.run_source(
        settings, config.data_dir, {"train": "train_split"}, train=settings["train_split"]
    )
    calibrated = config.quantize == formats.CALIBRATED
    train_split = settings["train_split"]
    count = _representative_count(config, train_split, metadata.num_examples["train"], log) if calibrated else None
    trained = predict.load(config.model_dir, config.model)
    representative = _images(source, train_split, trained.preprocessing, count) if calibrated else None

    from tfpipe.models import classifier

    log(f"Exporting {trained.path} as {config.format}, quantization {config.quantize}, to {path}")
    labels = os.path.join(os.path.dirname(os.path.abspath(path)), run_files.LABELS)
    with atomic.replacing(path, what=f"the {config.format} export") as temporary:
        graph = classifier.inference_graph(trained.model, probabilities=True)
        formats.write(graph, temporary, config.format, config.quantize, representative)
        if config.format == runtimes.LITERT:
            _embed_metadata(temporary, trained, settings)
        log(f"Checking it against the Keras model on up to {config.check_images} images of {check_split}")
        check = _check_against_keras(trained, temporary, config, source, check_split)
        if not check["passed"]:
            raise TfpipeError(
                f"the {config.format} {config.quantize} export scores {check['exported_accuracy']:.1%} on "
                f"{check['images']} {check_split} images against the Keras model's {check['keras_accuracy']:.1%}, "
                f"{check['accuracy_drop']:.2f} points lower, more than --max_accuracy_drop={config.accuracy_bound:g}; "
                "nothing was written. Try another --quantize, more --representative_images, or raise the bound"
            )
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
            "expects": trained.preprocessing.instructions(),
        },
        "preprocessing": trained.preprocessing.record(),
        "output": _output_meaning(trained.class_names),
        "image_size": trained.image_size,
        "class_names": list(trained.class_names),
        "labels": run_files.LABELS,
        "litert_metadata": _metadata_summary() if config.format == runtimes.LITERT else None,
        "exported_from": {"model": trained.path, "sha256": _sha256(trained.path)},
        "representative_images": count,
        "check": check,
        "versions": formats.converter_versions(config.format),
        "command": command,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic.write_json(run_files.export_record(path), record)
    return record


def _check_settings(config: ExportConfig) -> None:
    """Everything that can be checked before a model loads: TfpipeError, one line."""
    formats.check(config.format, config.quantize)
    if config.model not in predict.MODEL_CHOICES:
        raise TfpipeError(f"--model={config.model}: export_model exports a run's best or final model")
    if config.quantize == formats.CALIBRATED and config.representative_images < MIN_REPRESENTATIVE_IMAGES:
        raise TfpipeError(
            f"--representative_images={config.representative_images} is too few to calibrate int8 ranges; "
            f"give at least {MIN_REPRESENTATIVE_IMAGES} (default {DEFAULT_REPRESENTATIVE_IMAGES})"
        )
    if config.check_images < 1:
        raise TfpipeError(f"--check_images={config.check_images}: the check needs at least one validation image")
    if not config.accuracy_bound >= 0:
        raise TfpipeError(f"--max_accuracy_drop={config.max_accuracy_drop} must be 0 or more accuracy points")
    # The check runs the file with its own runtime: missing, it is an error now, never a skipped check.
    if config.format in runtimes.RUNTIME_PACKAGES:
        runtimes.require_package(*runtimes.RUNTIME_PACKAGES[config.format], needed_for=f"checking a {config.format} export")
    if config.format == runtimes.LITERT:
        runtimes.require_package("mediapipe", "mediapipe", needed_for="the metadata of a --format=litert export")


def _embed_metadata(path: str, trained, settings: dict) -> None:
    """TFLite metadata and labels.txt inside the .tflite (export.litert_metadata)."""
    from tfpipe.export import litert_metadata

    with open(path, "rb") as f:
        model = f.read()
    backbone = settings.get("backbone", "a pretrained base")
    names = ", ".join(trained.class_names)
    with open(path, "wb") as out:
        out.write(
            litert_metadata.embed(
                model,
                class_names=trained.class_names,
                labels_file=run_files.LABELS,
                input_description=trained.preprocessing.instructions(),
                name=f"tfpipe image classifier ({backbone})",
                description=f"Classifies an image as one of {len(trained.class_names)} classes: {names}.",
                version=_tfpipe_version(),
                license_text="Apache-2.0 (tfpipe; the base's pretrained weights: see the run's results.json)",
            )
        )


def _metadata_summary() -> dict:
    from tfpipe.export import litert_metadata

    return {
        "labels_file": run_files.LABELS,
        "min_parser_version": litert_metadata.MIN_PARSER_VERSION,
        "for": "MediaPipe Tasks ImageClassifier and other TFLite metadata readers",
    }


def _tfpipe_version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("tfpipe")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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


def _images(source, split: str, preprocessing, count: int):
    """A function giving the first `count` uint8 images of `split`, decoded and resized as the
    run's training did (tfds and folder splits are in shuffled order, so the first images mix
    the classes)."""
    from tfpipe.data import pipeline

    config = pipeline.PipelineConfig.reading(preprocessing, batch_size=1)

    def images():
        batches = pipeline.build(source, split, config, training=False, max_examples=count)
        for batch, _ in batches.as_numpy_iterator():
            yield batch[0]

    return images


def _check_against_keras(trained, path, config: ExportConfig, source, split) -> dict:
    """The exported file (with its own runtime) and the Keras model on up to config.check_images
    images of `split`: both accuracies, how often their top class agrees, and whether the file
    stays within config.accuracy_bound points of Keras."""
    from tfpipe.data import pipeline

    exported = predict.TrainedModel(
        runtimes.open_model(path, config.format), trained.class_names, trained.preprocessing, path, predict.PROBABILITIES
    )
    batches = pipeline.build(
        source,
        split,
        pipeline.PipelineConfig.reading(trained.preprocessing, _CHECK_BATCH),
        training=False,
        max_examples=config.check_images,
    )
    keras_right = exported_right = agree = images = 0
    largest = 0.0
    for batch, labels in batches.as_numpy_iterator():
        keras_probabilities, exported_probabilities = trained.probabilities(batch), exported.probabilities(batch)
        keras_top, exported_top = keras_probabilities.argmax(1), exported_probabilities.argmax(1)
        keras_right += int((keras_top == labels).sum())
        exported_right += int((exported_top == labels).sum())
        agree += int((keras_top == exported_top).sum())
        images += len(labels)
        largest = max(largest, float(np.abs(keras_probabilities - exported_probabilities).max()))
    keras_accuracy, exported_accuracy = keras_right / images, exported_right / images
    drop = 100 * (keras_accuracy - exported_accuracy)
    return {
        "images": images,
        "split": split,
        "keras_accuracy": keras_accuracy,
        "exported_accuracy": exported_accuracy,
        "accuracy_drop": round(drop, 4),  # points
        "max_accuracy_drop": config.accuracy_bound,
        "passed": drop <= config.accuracy_bound + 1e-9,
        "top1_agreement": agree / images,
        "max_probability_difference": largest,
    }


def _output_meaning(class_names) -> dict:
    return {
        "kind": predict.PROBABILITIES,
        "dtype": "float32",
        "shape": [None, len(class_names)],
        "meaning": f"the probability of each class, in the order of {run_files.LABELS} (class_names); they sum to 1",
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
