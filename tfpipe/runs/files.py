"""The names of what a run writes in its --model_dir, and reading them back.

One home for them: train writes these files, runs.state clears them for --overwrite,
the CLI lists them, and predict and evaluate read them.
"""

from __future__ import annotations

import json
import os

from tfpipe.errors import TfpipeError

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"  # inside CHECKPOINT_DIR
HISTORY = "history.json"
RESULTS = "results.json"
BEST_MODEL = "best.keras"
FINAL_MODEL = "final.keras"
EXPORT_DIR = "export"
EXPORTED_DIR = "exported"  # export_model's files: LiteRT, ONNX, SavedModel, labels.txt, records
LABELS = "labels.txt"  # beside each exported model: class i on line i + 1
TRAINING_CURVES = "training_curves.png"
TIME_PLOT = "where_time_goes.png"  # each epoch's computing and input waiting
TENSORBOARD_DIR = "tensorboard"
EVALUATION_DIR = "evaluation"
PREPROCESSING = "preprocessing.json"  # tfpipe.data.preprocessing: how the run's images were decoded and resized
MODEL_FILES = {"best": BEST_MODEL, "final": FINAL_MODEL}

# Everything --overwrite clears.
RUN_OUTPUTS = (
    CHECKPOINT_DIR,
    HISTORY,
    RESULTS,
    BEST_MODEL,
    FINAL_MODEL,
    EXPORT_DIR,
    EXPORTED_DIR,
    TRAINING_CURVES,
    TIME_PLOT,
    TENSORBOARD_DIR,
    EVALUATION_DIR,
    PREPROCESSING,
)


def export_record(model_path: str) -> str:
    """The JSON record export_model writes beside an exported model file or folder."""
    return model_path.rstrip(os.sep) + ".json"


def read_results(model_dir: str) -> dict:
    """results.json of a finished run, or a one-line error saying what the directory is."""
    if not os.path.isdir(model_dir):
        raise TfpipeError(f"--model_dir={model_dir} does not exist; give the --model_dir a train run wrote")
    path = os.path.join(model_dir, RESULTS)
    if not os.path.isfile(path):
        raise TfpipeError(
            f"--model_dir={model_dir} has no {RESULTS}: no train run finished there; run train to the end first"
        )
    return read_json(path)


def read_run_settings(model_dir: str) -> dict:
    """The settings a run was trained with (its checkpoint's fingerprint: dataset, splits, sizes)."""
    path = os.path.join(model_dir, CHECKPOINT_DIR, STATE_FILE)
    if not os.path.isfile(path):
        raise TfpipeError(f"--model_dir={model_dir} has no {CHECKPOINT_DIR}/{STATE_FILE}: not a train run")
    return read_json(path)["fingerprint"]


def read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        raise TfpipeError(f"cannot read {path} ({error}); rerun train to rewrite it") from None
