"""Where a model is wrong: the evaluation report of a split, in RUN/evaluation/.

    report.json           accuracy, loss, per-class precision/recall/F1/support, their macro
                          and weighted averages, the confusion matrix (rows: true class,
                          columns: predicted), top-5 accuracy above 5 classes, ROC AUC for 2
    confusion_matrix.png  the matrix with class names and counts
    mistakes.png          the most confidently wrong images, true and predicted label

One pass over the split gives everything: the probabilities and labels of every image,
and the few most confidently wrong images themselves. TensorFlow and Keras compute the
confusion matrix, the loss, top-k accuracy and AUC; the per-class ratios follow from
the matrix.
"""

from __future__ import annotations

import os
import re

import keras
import numpy as np
import tensorflow as tf

from tfpipe import atomic
from tfpipe.errors import TfpipeError
from tfpipe.inference import report as report_lib
from tfpipe.inference.predict import TrainedModel
from tfpipe.runs.files import EVALUATION_DIR

REPORT = "report.json"
CONFUSION_MATRIX = "confusion_matrix.png"
MISTAKES = "mistakes.png"
MISTAKES_SHOWN = 16


def evaluate(trained: TrainedModel, batches, split: str) -> tuple[dict, list]:
    """(report, mistakes) from (uint8 images, labels) batches; mistakes are
    (image, true id, predicted id, probability of the prediction), most confident first."""
    probabilities, labels, mistakes = [], [], []
    for images, batch_labels in batches:
        batch_probabilities = trained.probabilities(images)
        probabilities.append(batch_probabilities)
        labels.append(np.asarray(batch_labels))
        mistakes = _most_confident_mistakes(mistakes, np.asarray(images), labels[-1], batch_probabilities)
    probabilities = np.concatenate(probabilities)
    labels = np.concatenate(labels).astype(np.int64)
    return report(probabilities, labels, trained.class_names, split), mistakes


def _most_confident_mistakes(kept, images, labels, probabilities):
    predicted = probabilities.argmax(axis=1)
    for i in np.flatnonzero(predicted != labels):
        kept.append((images[i], int(labels[i]), int(predicted[i]), float(probabilities[i, predicted[i]])))
    return sorted(kept, key=lambda mistake: -mistake[3])[:MISTAKES_SHOWN]


def report(probabilities: np.ndarray, labels: np.ndarray, class_names, split: str) -> dict:
    """The report of predicted `probabilities` (n, classes) against integer `labels`."""
    num_classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    matrix = tf.math.confusion_matrix(labels, predicted, num_classes=num_classes).numpy()
    per_class, support = {}, matrix.sum(axis=1)
    for i, name in enumerate(class_names):
        true_positives = matrix[i, i]
        precision = _ratio(true_positives, matrix[:, i].sum())
        recall = _ratio(true_positives, support[i])
        f1 = _ratio(2 * precision * recall, precision + recall)
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": int(support[i])}
    result = {
        "split": split,
        "examples": int(len(labels)),
        "accuracy": float(np.mean(predicted == labels)),
        "loss": _loss(probabilities, labels),
        "per_class": per_class,
        "macro_avg": _average(per_class, weights=None),
        "weighted_avg": _average(per_class, weights=support),
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }
    if num_classes > 5:
        top5 = keras.metrics.SparseTopKCategoricalAccuracy(k=5)
        top5.update_state(labels, probabilities.astype(np.float32))
        result["top_5_accuracy"] = float(top5.result())
    if num_classes == 2:
        auc = keras.metrics.AUC(num_thresholds=1000)
        auc.update_state(labels, probabilities[:, 1].astype(np.float32))
        result["roc_auc"] = float(auc.result())
    return result


def _ratio(numerator, denominator) -> float:
    return float(numerator / denominator) if denominator else 0.0


def _loss(probabilities, labels) -> float:
    """Cross-entropy of the predictions: what training minimised, from the probabilities."""
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))


def _average(per_class: dict, weights) -> dict:
    rows = list(per_class.values())
    weights = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return {
        metric: float(np.dot([row[metric] for row in rows], weights) / total) if total else 0.0
        for metric in ("precision", "recall", "f1")
    }


def weakest_class(result: dict) -> tuple[str, float]:
    """The class with the lowest recall, and that recall."""
    name = min(result["per_class"], key=lambda n: (result["per_class"][n]["recall"], n))
    return name, result["per_class"][name]["recall"]


def summary(result: dict) -> str:
    name, recall = weakest_class(result)
    return (
        f"Evaluation ({result['split']}, {result['examples']} images): accuracy {result['accuracy']:.3f}; "
        f"weakest class {name} (recall {recall:.3f})"
    )


def write(model_dir: str, result: dict, mistakes: list, subfolder: str | None = None) -> str:
    """report.json and the two pictures into model_dir/evaluation/[subfolder]; returns that folder."""
    folder = os.path.join(model_dir, EVALUATION_DIR, *([subfolder] if subfolder else []))
    os.makedirs(folder, exist_ok=True)
    atomic.write_json(os.path.join(folder, REPORT), result)
    with atomic.replacing(os.path.join(folder, CONFUSION_MATRIX)) as temporary:
        report_lib.plot_confusion_matrix(result, temporary)
    with atomic.replacing(os.path.join(folder, MISTAKES)) as temporary:
        report_lib.plot_mistakes(mistakes, result["class_names"], temporary)
    return folder


def evaluate_run(model_dir: str, split: str | None = None, which: str | None = None, data_dir: str | None = None):
    """Evaluates a finished run on `split` (default: its test split) of the dataset it was
    trained on; returns (report, the folder it was written to).

    Example::

        report, folder = tfpipe.evaluate_run("runs/pets", split="train[80%:90%]")
        print(report["accuracy"], report["per_class"]["cat"]["recall"], folder)

    The run's test split goes to evaluation/, any other split to evaluation/<split>/; an
    exported model's (`which` a .tflite, .onnx or SavedModel path) to
    evaluation/<its file name>/[<split>/]. Images are decoded with the run's preprocessing."""
    from tfpipe.data import pipeline
    from tfpipe.inference import predict
    from tfpipe.runs.files import read_run_settings

    settings = read_run_settings(model_dir)
    trained = predict.load(model_dir, which or predict.DEFAULT_MODEL)
    split = split or settings.get("test_split")
    if not split:
        raise TfpipeError(f"the run in {model_dir} has no test split; give --split, e.g. --split='train[90%:]'")
    source, _ = run_source(settings, data_dir, {"evaluated": "split"}, evaluated=split)
    if tuple(source.class_names) != trained.class_names:
        raise TfpipeError(
            f"{settings['dataset']} in --data_dir={data_dir} has classes {list(source.class_names)}, "
            f"but the model was trained on {list(trained.class_names)}; give the --data_dir train used"
        )
    batch_size = settings.get("pipeline.batch_size", predict.DEFAULT_BATCH_SIZE)
    batches = pipeline.build(
        source, split, pipeline.PipelineConfig.reading(trained.preprocessing, batch_size), training=False
    )
    result, mistakes = evaluate(trained, batches.as_numpy_iterator(), split)
    result["model"], result["runtime"] = trained.path, trained.runtime
    parts = [] if trained.runtime == "keras" else [_folder_name(os.path.basename(trained.path.rstrip(os.sep)))]
    parts += [] if split == settings.get("test_split") else [_folder_name(split)]
    return result, write(model_dir, result, mistakes, os.path.join(*parts) if parts else None)


def run_source(settings: dict, data_dir: str | None, flags: dict, **splits: str):
    """(source, metadata): the dataset a run was trained on (its checkpoint's settings),
    opened from `data_dir`, and the examples in each of `splits` (role -> split), each
    checked to hold some; `flags` names the setting of each role for the errors."""
    from tfpipe.data import csv_labels, sources

    source = sources.open_source(settings["dataset"], data_dir, csv_labels.CsvOptions(**settings.get("csv", {})))
    return source, sources.describe(source, flags=flags, **splits)


def _folder_name(split: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", split).strip("_") or "split"
