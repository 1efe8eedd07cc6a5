"""predict: a trained run's answers for image files, folders and globs."""

import csv
import json
import os

import keras
import numpy as np
import pytest
from helpers.images import write_image
from helpers.runs import read_json
from helpers.tools import assert_one_line_error, run_tool

from tfpipe.data import preprocessing
from tfpipe.errors import TfpipeError
from tfpipe.inference import predict

# Tests that share the session's finished run go to one test process, which builds it once.
pytestmark = pytest.mark.xdist_group("finished_run")


@pytest.fixture(scope="module")
def binary_run(finished_run):
    config, _, _ = finished_run
    return config.model_dir


@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    """A run directory as train leaves it, holding an untrained five-class model: what predict
    reads of a run is the model, results.json and preprocessing.json, whatever the training was."""
    model_dir = tmp_path_factory.mktemp("multiclass")
    inputs = keras.Input((32, 32, 3), dtype="uint8")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(1 / 255)(inputs))
    keras.Model(inputs, keras.layers.Dense(5)(features)).save(model_dir / "best.keras")
    names = ["circle", "ellipse", "rectangle", "square", "triangle"]
    (model_dir / "results.json").write_text(json.dumps({"class_names": names, "num_classes": 5}))
    (model_dir / "preprocessing.json").write_text(json.dumps(preprocessing.Preprocessing(32).record()))
    return str(model_dir)


@pytest.fixture
def images(tmp_path):
    """Three decodable images (two in a nested folder), a corrupt one, and a text file."""
    rng = np.random.default_rng(0)
    (tmp_path / "photos" / "nested").mkdir(parents=True)
    for name, fmt in (("photos/a.jpg", "jpeg"), ("photos/nested/b.png", "png"), ("c.jpg", "jpeg")):
        write_image(str(tmp_path / name), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8), fmt)
    (tmp_path / "photos" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    return tmp_path


def test_files_folders_and_globs_with_a_corrupt_file_among_them(binary_run, images):
    paths = predict.find_images([str(images / "photos"), str(images / "*.jpg"), str(images / "c.jpg")])
    names = [os.path.relpath(p, images) for p in paths]
    assert names == ["photos/a.jpg", "photos/broken.jpg", "photos/nested/b.png", "c.jpg"]  # .txt skipped, c once
    rows = predict.predict(predict.load(binary_run), paths, top_k=2, batch_size=2)
    assert [row.path for row in rows] == paths
    assert [row.ok for row in rows] == [True, False, True, True]
    assert "decode" in rows[1].error
    for row in rows:
        if row.ok:
            assert row.top[0][0] in ("ellipse", "rectangle")
            assert sum(p for _, p in row.top) == pytest.approx(1.0)  # both classes from the single logit


def test_binary_probabilities_come_from_the_single_logit():
    probabilities = predict.probabilities_from_logits(np.array([[0.0], [2.0], [-3.0]]))
    assert probabilities[:, 1] == pytest.approx(1 / (1 + np.exp(-np.array([0.0, 2.0, -3.0]))))
    assert probabilities.sum(axis=1) == pytest.approx(np.ones(3))


def test_multiclass_top_k_is_ordered_and_sums_to_one(multiclass_run, images):
    trained = predict.load(multiclass_run)
    assert len(trained.class_names) == 5
    rows = predict.predict(trained, [str(images / "c.jpg"), str(images / "photos" / "a.jpg")], top_k=5)
    for row in rows:
        probabilities = [p for _, p in row.top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) == pytest.approx(1.0)
        assert sorted(name for name, _ in row.top) == sorted(trained.class_names)
    # The same images through the model directly: predict adds nothing but decoding.
    batch = next(predict.decoded_batches([row.path for row in rows], trained.preprocessing, 8))[1]
    direct = keras.activations.softmax(trained.model(batch, training=False)).numpy()
    assert rows[0].top[0][1] == pytest.approx(direct[0].max(), rel=1e-5)


@pytest.mark.parametrize("extension", [".csv", ".json"])
def test_both_output_formats(binary_run, images, tmp_path, extension):
    paths = [str(images / "c.jpg"), str(images / "photos" / "broken.jpg")]
    rows = predict.predict(predict.load(binary_run), paths, top_k=2)
    out = tmp_path / f"predictions{extension}"
    predict.write(rows, str(out))
    if extension == ".json":
        records = read_json(out)
        assert records[0]["class"] == rows[0].top[0][0] and len(records[0]["top_k"]) == 2
        assert records[1]["error"] and records[1]["class"] is None
    else:
        records = list(csv.DictReader(out.open()))
        assert records[0]["class"] == rows[0].top[0][0]
        assert float(records[0]["probability_1"]) + float(records[0]["probability_2"]) == pytest.approx(1, abs=1e-5)
        assert records[1]["error"] and not records[1]["class"]


@pytest.mark.slow
def test_the_tool_prints_a_table_and_its_exit_status_says_a_file_failed(binary_run, images):
    result = run_tool("predict", f"--model_dir={binary_run}", str(images / "photos"), timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and "broken.jpg" in lines[1] and "error:" in lines[1]
    assert "1 of 3 files could not be predicted" in result.stderr


def test_bad_input_is_one_line_before_any_work(binary_run, images, tmp_path):
    with pytest.raises(TfpipeError, match="does not exist"):
        predict.load(str(tmp_path / "no_run"))
    with pytest.raises(TfpipeError, match="no results.json"):
        predict.load(str(tmp_path))
    with pytest.raises(TfpipeError, match="no images matched"):
        predict.find_images([str(tmp_path / "empty_*.jpg")])
    with pytest.raises(TfpipeError, match="give a .csv or .json"):
        predict.check_output(str(tmp_path / "out.txt"))
    with pytest.raises(TfpipeError, match="--model=final"):
        no_model = tmp_path / "no_model"
        no_model.mkdir()
        (no_model / "results.json").write_text(json.dumps({"class_names": ["a", "b"]}))
        predict.load(str(no_model), "final")
    three_outputs = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
    three_outputs.save(tmp_path / "other.keras")
    with pytest.raises(TfpipeError, match="3 outputs but the run's results.json names 2 classes"):
        predict.load(binary_run, str(tmp_path / "other.keras"))
    (tmp_path / "junk.keras").write_text("junk")
    with pytest.raises(TfpipeError, match="is not a Keras model"):
        predict.load(binary_run, str(tmp_path / "junk.keras"))


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "--model_dir is required"),
        (["--model_dir=.", "--no_such_flag"], "Unknown command line flag"),
    ],
)
def test_the_tool_refuses_bad_input_in_one_line(flags, message):
    assert_one_line_error(run_tool("predict", *flags, timeout=120), "predict", message)
