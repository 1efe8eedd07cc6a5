"""The evaluation report: its numbers against a hand-computed confusion matrix, and its files."""

import os

import numpy as np
import pytest
from helpers.runs import read_json
from helpers.tools import assert_one_line_error, run_tool

from tfpipe.errors import TfpipeError
from tfpipe.inference import evaluation

# Tests that share the session's finished run go to one test process, which builds it once.
pytestmark = pytest.mark.xdist_group("finished_run")

NAMES = ("cat", "dog", "fox")


def _one_hot_predictions(predicted, num_classes, confidence=0.8):
    probabilities = np.full((len(predicted), num_classes), (1 - confidence) / (num_classes - 1))
    probabilities[np.arange(len(predicted)), predicted] = confidence
    return probabilities


def test_report_numbers_match_a_hand_computed_confusion_matrix():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    predicted = np.array([0, 0, 1, 2, 1, 1, 0, 2, 2, 2])
    # true\predicted  cat dog fox
    # cat              2   1   1
    # dog              1   2   0
    # fox              0   0   3
    result = evaluation.report(_one_hot_predictions(predicted, 3), labels, NAMES, "test")
    assert result["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 3]]
    assert result["accuracy"] == pytest.approx(0.7)
    cat, dog, fox = (result["per_class"][name] for name in NAMES)
    assert (cat["precision"], cat["recall"], cat["support"]) == (pytest.approx(2 / 3), pytest.approx(2 / 4), 4)
    assert (dog["precision"], dog["recall"]) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert (fox["precision"], fox["recall"], fox["f1"]) == (pytest.approx(3 / 4), 1.0, pytest.approx(6 / 7))
    assert cat["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert result["macro_avg"]["recall"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert result["weighted_avg"]["recall"] == pytest.approx((0.5 * 4 + 2 / 3 * 3 + 1 * 3) / 10)
    assert result["loss"] == pytest.approx(
        np.mean(-np.log([0.8 if p == t else 0.1 for p, t in zip(predicted, labels)]))
    )
    assert "roc_auc" not in result and "top_5_accuracy" not in result
    assert evaluation.weakest_class(result) == ("cat", 0.5)


def test_binary_report_has_roc_auc_and_many_classes_top_5():
    labels = np.array([0, 0, 1, 1])
    positive = np.array([0.1, 0.6, 0.4, 0.9])  # one pair out of order: AUC 3/4
    binary = evaluation.report(np.stack([1 - positive, positive], axis=1), labels, ("no", "yes"), "test")
    assert binary["roc_auc"] == pytest.approx(0.75, abs=0.01)
    names = tuple(f"c{i}" for i in range(7))
    probabilities = np.tile(np.linspace(0.2, 0.08, 7), (2, 1))  # ranks c0 first ... c6 last
    many = evaluation.report(probabilities, np.array([3, 6]), names, "test")
    assert many["top_5_accuracy"] == pytest.approx(0.5)  # c3 is in the top 5, c6 is not
    assert many["accuracy"] == 0.0


def test_train_ends_with_the_report_of_its_test_split(finished_run):
    config, results, logged = finished_run
    folder = os.path.join(config.model_dir, "evaluation")
    assert sorted(os.listdir(folder)) == ["confusion_matrix.png", "mistakes.png", "report.json"]
    report = read_json(os.path.join(folder, "report.json"))
    assert report["split"] == config.test_split and report["examples"] == results["examples"]["test"]
    assert report["accuracy"] == pytest.approx(results["test_accuracy"])
    assert np.sum(report["confusion_matrix"]) == report["examples"]
    assert any(line.startswith("Evaluation (") and "weakest class" in line for line in logged)
    for picture in ("confusion_matrix.png", "mistakes.png"):
        assert open(os.path.join(folder, picture), "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reads_the_run_and_writes_another_split_aside(finished_run, data_dir):
    config, results, _ = finished_run
    result, folder = evaluation.evaluate_run(config.model_dir, "train[:50%]", data_dir=data_dir)
    assert folder == os.path.join(config.model_dir, "evaluation", "train_50")
    assert result["examples"] == 20 and os.path.isfile(os.path.join(folder, "report.json"))
    again, folder = evaluation.evaluate_run(config.model_dir, data_dir=data_dir)  # the run's test split
    assert folder == os.path.join(config.model_dir, "evaluation")
    assert again["accuracy"] == pytest.approx(results["test_accuracy"])


def test_evaluate_bad_input(finished_run, data_dir, tmp_path):
    config, _, _ = finished_run
    with pytest.raises(TfpipeError, match="selects no examples"):
        evaluation.evaluate_run(config.model_dir, "train[50%:50%]", data_dir=data_dir)
    with pytest.raises(TfpipeError, match="--split"):
        evaluation.evaluate_run(config.model_dir, "train[:abc]", data_dir=data_dir)
    with pytest.raises(TfpipeError, match="not a train run"):
        evaluation.evaluate_run(str(tmp_path), data_dir=data_dir)


@pytest.mark.slow
def test_the_evaluate_tool(finished_run, data_dir):
    config, _, _ = finished_run
    result = run_tool("evaluate", f"--model_dir={config.model_dir}", f"--data_dir={data_dir}", timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Evaluation (" in result.stdout and "ellipse: precision" in result.stdout
    assert_one_line_error(run_tool("evaluate", timeout=120), "evaluate", "--model_dir is required")


@pytest.mark.slow
def test_a_run_without_dct_scaling_evaluates_as_it_trained(tmp_path, data_dir):
    """evaluate reads the run's preprocessing (preprocessing.json): a run trained with
    jpeg_dct_scaling off scores the same test loss in evaluate as in results.json. Decoded
    with the default (DCT scaling on), several of the tiny test images get other pixels."""
    import dataclasses

    import tensorflow as tf
    from helpers.runs import TINY, TINY_PIPELINE, tiny_train_config

    from tfpipe.data import pipeline, sources
    from tfpipe.training.train import train

    no_scaling = dataclasses.replace(TINY_PIPELINE, jpeg_dct_scaling=False)
    config = tiny_train_config(tmp_path, data_dir, pipeline=no_scaling, initial_epochs=1, fine_tune_epochs=0)
    results = train(config, log=lambda line: None)
    assert read_json(os.path.join(config.model_dir, "preprocessing.json"))["jpeg_dct_scaling"] is False
    result, _ = evaluation.evaluate_run(config.model_dir, data_dir=data_dir)
    assert result["examples"] == results["examples"]["test"]
    assert result["accuracy"] == results["test_accuracy"]
    assert result["loss"] == pytest.approx(results["test_loss"], rel=1e-5, abs=1e-6)
    # The check can fail: the same test images decoded the default way differ.
    source = sources.open_source(TINY, data_dir)
    other = [
        np.concatenate([images.numpy() for images, _ in pipeline.build(source, config.test_split, c, training=False)])
        for c in (dataclasses.replace(no_scaling, cache="none"), dataclasses.replace(TINY_PIPELINE, cache="none"))
    ]
    assert tf.reduce_any(other[0] != other[1])
