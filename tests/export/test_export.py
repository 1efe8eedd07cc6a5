"""export_model: each format and quantization exported from a run, then predicted and
evaluated with its own runtime (LiteRT, onnxruntime, TensorFlow), and its bad input."""

import hashlib
import importlib.util
import json
import os
import shutil

import keras
import numpy as np
import pytest
from helpers.images import imbalanced_folder, write_image
from helpers.runs import read_json
from helpers.tools import assert_one_line_error, run_tool

from tfpipe.errors import TfpipeError
from tfpipe.export import exporter, formats
from tfpipe.inference import evaluation, predict
from tfpipe.models import augment, backbones, classifier

# The runs here start from the session's finished run: one test process builds it once.
pytestmark = pytest.mark.xdist_group("finished_run")

CASES = [
    ("litert", "none"),
    ("litert", "float16"),
    ("litert", "dynamic"),
    ("litert", "int8"),
    ("onnx", "none"),
    ("onnx", "float16"),
    ("onnx", "dynamic"),
    ("onnx", "int8"),
    ("saved_model", "none"),
]
# Largest difference of a class probability from the Keras model's, per quantization.
TOLERANCE = {"none": 1e-4, "float16": 5e-3, "dynamic": 0.05, "int8": 0.05}


@pytest.fixture(scope="module")
def small_run(finished_run, tmp_path_factory):
    """The session's finished run with its best model replaced by a small one, built by the
    same build_classifier (uint8 input, augmentation, the backbone's scaling, the frozen base,
    the head) around a two-convolution base. What export reads of a run is its model,
    results.json and settings; converting EfficientNet-Lite0 takes 12 s a file, so the
    real base is exported once, by the tests at the end."""
    config, _, _ = finished_run
    run = str(tmp_path_factory.mktemp("small") / "run")
    shutil.copytree(config.model_dir, run, ignore=shutil.ignore_patterns("evaluation", "tensorboard", "exported"))
    base = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Conv2D(16, 3, activation="relu"),
        ],
        name="small_base",
    )
    augmentation = augment.build(augment.parse("flip=horizontal,rotation=0.2"), seed=1)
    model = classifier.build_classifier(backbones.get("efficientnet_lite0"), base, 32, 2, augmentation=augmentation)
    model.save(os.path.join(run, "best.keras"))
    return run


@pytest.fixture(scope="module")
def keras_report(small_run, data_dir):
    result, _ = evaluation.evaluate_run(small_run, data_dir=data_dir)
    return result


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(5):
        write_image(str(folder / f"{i}.jpg"), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), "jpeg")
    return sorted(str(path) for path in folder.iterdir())


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _stored_types(path, model_format):
    """The numpy dtypes of the weights a LiteRT or ONNX file stores."""
    if model_format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        return {np.dtype(t["dtype"]).name for t in Interpreter(model_path=path).get_tensor_details()}
    import onnx

    return {onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name for t in onnx.load(path).graph.initializer}


@pytest.mark.slow
@pytest.mark.parametrize("model_format, quantize", CASES)
def test_each_format_is_exported_predicted_and_evaluated(
    small_run, data_dir, keras_report, photos, model_format, quantize
):
    logged = []
    config = exporter.ExportConfig(
        model_dir=small_run, format=model_format, quantize=quantize, representative_images=20, data_dir=data_dir
    )
    record = exporter.export_run(config, command="export_model --test", log=logged.append)

    path = os.path.join(small_run, "exported", formats.file_name("best", model_format, quantize))
    assert os.path.exists(path) and read_json(path + ".json") == record
    assert open(os.path.join(small_run, "exported", "labels.txt")).read().split("\n") == ["ellipse", "rectangle", ""]
    assert record["format"] == model_format and record["quantization"] == quantize
    assert record["class_names"] == ["ellipse", "rectangle"] and record["image_size"] == 32
    assert record["input"]["dtype"] == "uint8" and record["input"]["shape"] == [None, 32, 32, 3]
    assert "Resize the whole image to 32 x 32 with bilinear interpolation, stretching it" in record["input"]["expects"]
    assert record["preprocessing"]["image_size"] == 32 and record["preprocessing"]["jpeg_dct_scaling"] is True
    assert record["output"]["kind"] == "probabilities" and record["output"]["shape"] == [None, 2]
    assert record["command"] == "export_model --test"
    if model_format != "saved_model":
        assert record["bytes"] == os.path.getsize(path) and record["sha256"] == _sha256(path)
        stored = _stored_types(path, model_format)
        expected = {"none": "float32", "float16": "float16", "dynamic": "int8", "int8": "int8"}[quantize]
        assert expected in stored, stored
        if quantize == "none":
            assert not stored & {"float16", "int8"}
    assert record["representative_images"] == (20 if quantize == "int8" else None)
    check = record["check"]
    assert check["images"] == 4 and check["split"] == "train[80%:90%]" and check["passed"]
    assert check["max_accuracy_drop"] == exporter.MAX_ACCURACY_DROP[quantize]
    assert check["accuracy_drop"] == pytest.approx(100 * (check["keras_accuracy"] - check["exported_accuracy"]))
    # Every quantization agrees with the Keras model on the 4 validation images, probabilities within its tolerance.
    assert check["top1_agreement"] == 1.0 and check["max_probability_difference"] <= TOLERANCE[quantize]

    # predict needs only the file: the class names come from its record.
    exported = predict.load(None, path)
    assert exported.runtime == model_format and exported.class_names == ("ellipse", "rectangle")
    assert exported.outputs == predict.PROBABILITIES and exported.preprocessing.image_size == 32
    rows = predict.predict(exported, photos)
    # An image's probabilities do not depend on the images batched with it.
    images = np.stack([np.asarray(keras.utils.load_img(p, target_size=(32, 32))) for p in photos]).astype(np.uint8)
    one_at_a_time = np.concatenate([exported.outputs_of(images[i : i + 1]) for i in range(len(images))])
    np.testing.assert_allclose(exported.outputs_of(images), one_at_a_time, atol=1e-5)
    np.testing.assert_allclose(exported.outputs_of(images).sum(axis=1), 1.0, atol=1e-2)
    expected_rows = predict.predict(predict.load(small_run), photos)
    for row, expected_row in zip(rows, expected_rows):
        assert dict(row.top) == pytest.approx(dict(expected_row.top), abs=TOLERANCE[quantize])

    result, folder = evaluation.evaluate_run(small_run, which=path, data_dir=data_dir)
    assert folder == os.path.join(small_run, "evaluation", os.path.basename(path))
    assert read_json(os.path.join(folder, "report.json")) == result
    assert result["runtime"] == model_format and result["examples"] == keras_report["examples"] == 4
    assert os.path.isfile(os.path.join(folder, "confusion_matrix.png"))
    if quantize in ("none", "float16"):
        assert result["confusion_matrix"] == keras_report["confusion_matrix"]
        assert result["loss"] == pytest.approx(keras_report["loss"], abs=TOLERANCE[quantize])


@pytest.mark.slow
def test_the_real_base_as_int8_litert_is_labelled_by_mediapipe_as_predict_labels_it(finished_run, data_dir, tmp_path):
    """EfficientNet-Lite0 as train left it, augmentation in the model: full-integer LiteRT,
    calibrated on the training split, takes uint8 images and gives float probabilities; MediaPipe
    Tasks' ImageClassifier runs the file alone and names the classes from its metadata."""
    import mediapipe
    from mediapipe.tasks.python import BaseOptions, vision

    from tfpipe.data import pipeline, sources
    from tfpipe.export import litert_metadata

    config, _, _ = finished_run
    output = str(tmp_path / "lite0_int8.tflite")
    record = exporter.export_run(
        exporter.ExportConfig(
            model_dir=config.model_dir, quantize="int8", output=output, representative_images=20, data_dir=data_dir
        ),
        log=lambda line: None,
    )
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=output)
    (image,) = interpreter.get_input_details()
    (probabilities,) = interpreter.get_output_details()
    assert np.dtype(image["dtype"]) == np.uint8 and np.dtype(probabilities["dtype"]) == np.float32
    assert list(probabilities["shape"]) == [1, 2] and {"int8"} <= _stored_types(output, "litert")
    assert record["check"]["passed"] and record["check"]["images"] == 4
    metadata, packed = litert_metadata.read(open(output, "rb").read())
    assert metadata[4:8] == b"M001" and packed == {"labels.txt": b"ellipse\nrectangle\n"}

    # The validation and test images as the run decoded them, saved losslessly at the model's size.
    source = sources.open_source(config.dataset, data_dir)
    reading = pipeline.PipelineConfig.reading(predict.load(config.model_dir).preprocessing, batch_size=8)
    paths = []
    for split in (config.val_split, config.test_split):
        for batch, _ in pipeline.build(source, split, reading, training=False).as_numpy_iterator():
            for pixels in batch:
                paths.append(str(tmp_path / f"{len(paths)}.png"))
                write_image(paths[-1], pixels, "png")
    rows = predict.predict(predict.load(None, output), paths, top_k=2)
    options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=output))
    with vision.ImageClassifier.create_from_options(options) as mediapipe_classifier:
        for path, row in zip(paths, rows):
            (head,) = mediapipe_classifier.classify(mediapipe.Image.create_from_file(path)).classifications
            labelled = [(category.category_name, category.score) for category in head.categories]
            assert [name for name, _ in labelled] == [name for name, _ in row.top], path
            assert [score for _, score in labelled] == pytest.approx([p for _, p in row.top], abs=1e-3)
    assert len(paths) == 8


def _brightness_run(tmp_path, small_run, data_dir):
    """A run whose model is right on every validation image by construction: a folder of dark
    (c0) and bright (c1) images, and a classifier whose logit is the image's mean brightness
    less a threshold between the two. Made from the small run's files, its dataset pointed at it."""
    import keras

    folder = imbalanced_folder(tmp_path / "images", (12, 12), size=32, separation=150)
    run = str(tmp_path / "bright_run")
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("exported", "evaluation"))
    state = os.path.join(run, "checkpoint", "state.json")
    saved = read_json(state)
    saved["fingerprint"].update(dataset=f"folder:{folder}", train_split="train[:50%]", val_split="train[50%:]")
    with open(state, "w") as out:
        json.dump(saved, out)
    results = read_json(os.path.join(run, "results.json"))
    with open(os.path.join(run, "results.json"), "w") as out:
        json.dump(dict(results, class_names=["c0", "c1"]), out)
    base = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Identity()], name="identity_base")
    model = classifier.build_classifier(backbones.get("efficientnet_lite0"), base, 32, 2, dropout=0.0)
    # Lite scaling maps pixel p to (p - 127) / 128; c0 sits near 100, c1 near 250: threshold at 175.
    kernel, bias = model.get_layer("logits").weights
    kernel.assign(np.full((3, 1), 10.0, "float32"))
    bias.assign(np.full((1,), -30.0 * (175 - 127) / 128, "float32"))
    model.save(os.path.join(run, "best.keras"))
    return run


def test_an_export_that_loses_accuracy_fails_and_leaves_no_file(small_run, data_dir, tmp_path, monkeypatch):
    run = _brightness_run(tmp_path, small_run, data_dir)
    output = str(tmp_path / "bright.tflite")
    record = exporter.export_run(_config(run, data_dir, output=output), log=lambda line: None)
    assert record["check"]["keras_accuracy"] == record["check"]["exported_accuracy"] == 1.0
    assert record["check"]["images"] == 12 and record["check"]["passed"]
    # The same export, its file made to call every image the other class: 100 points lower.
    write = formats.write

    def swapped(model, path, *args):
        import keras

        flipped = keras.Model(model.input, keras.ops.flip(model.output, axis=-1))
        write(flipped, path, *args)

    monkeypatch.setattr(formats, "write", swapped)
    refused = str(tmp_path / "swapped.tflite")
    with pytest.raises(TfpipeError, match=r"scores 0\.0% on 12 train\[50%:\] images against the Keras model's 100\.0%"):
        exporter.export_run(_config(run, data_dir, output=refused, max_accuracy_drop=50), log=lambda line: None)
    assert not os.path.exists(refused) and not os.path.exists(refused + ".json")
    assert [name for name in os.listdir(tmp_path) if name.startswith(".tmp")] == []


@pytest.mark.slow
def test_the_tool_exports_the_real_base_to_onnx_and_predict_runs_it(finished_run, data_dir, tmp_path):
    config, _, _ = finished_run
    output = str(tmp_path / "lite0.onnx")
    args = [f"--model_dir={config.model_dir}", f"--data_dir={data_dir}", "--format=onnx", f"--output={output}"]
    result = run_tool("export_model", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote lite0.onnx: onnx, quantization none" in result.stdout
    assert "check on 4 train[80%:90%] images: accuracy" in result.stdout
    assert "agrees with the Keras model on 100.0%" in result.stdout
    assert read_json(output + ".json")["command"].endswith(" ".join(args))
    photo = str(tmp_path / "photo.png")
    write_image(photo, np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8), "png")
    onnx_rows = predict.predict(predict.load(None, output), [photo])
    keras_rows = predict.predict(predict.load(config.model_dir), [photo])
    assert dict(onnx_rows[0].top) == pytest.approx(dict(keras_rows[0].top), abs=1e-4)
    # Exported again to the same place: refused in one line, before any work.
    assert_one_line_error(run_tool("export_model", *args, timeout=120), "export_model", "pass --overwrite")


def _config(run, data_dir, **overrides):
    return exporter.ExportConfig(model_dir=run, data_dir=data_dir, **overrides)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"format": "coreml"}, "--format='coreml' is not an export format; use one of litert, onnx, saved_model"),
        ({"quantize": "int4"}, "--quantize='int4' is not known"),
        ({"format": "saved_model", "quantize": "int8"}, "a SavedModel keeps float32"),
        ({"model": "latest"}, "exports a run's best or final model"),
        ({"quantize": "int8", "representative_images": 5}, "too few to calibrate int8 ranges; give at least 20"),
        ({"output": "model.onnx"}, "a litert model is a .tflite file"),
        ({"format": "saved_model", "output": "model.tflite"}, "a SavedModel is a folder"),
        ({"check_images": 0}, "--check_images=0: the check needs at least one validation image"),
        ({"max_accuracy_drop": -1.0}, "--max_accuracy_drop=-1.0 must be 0 or more accuracy points"),
    ],
)
def test_bad_settings_are_one_line_before_the_model_loads(small_run, data_dir, overrides, message):
    with pytest.raises(TfpipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        exporter.export_run(_config(small_run, data_dir, **overrides), log=lambda line: None)


def test_bad_runs_and_paths(small_run, data_dir, tmp_path):
    with pytest.raises(TfpipeError, match="not a train run"):
        exporter.export_run(_config(str(tmp_path), data_dir), log=lambda line: None)
    final_missing = str(tmp_path / "no_final")
    shutil.copytree(small_run, final_missing, ignore=shutil.ignore_patterns("final.keras", "exported"))
    with pytest.raises(TfpipeError, match="the run saved no final model"):
        exporter.export_run(_config(final_missing, data_dir, model="final"), log=lambda line: None)
    existing = tmp_path / "taken.tflite"
    existing.write_text("a file the user keeps")
    with pytest.raises(TfpipeError, match="exists; pass --overwrite"):
        exporter.export_run(_config(small_run, data_dir, output=str(existing)), log=lambda line: None)
    assert existing.read_text() == "a file the user keeps"
    # A training split too small to calibrate int8 on.
    few = str(tmp_path / "few")
    shutil.copytree(small_run, few, ignore=shutil.ignore_patterns("exported"))
    state = os.path.join(few, "checkpoint", "state.json")
    saved = read_json(state)
    saved["fingerprint"]["train_split"] = "train[:10%]"
    with open(state, "w") as out:
        json.dump(saved, out)
    with pytest.raises(TfpipeError, match="holds 4 images; int8 calibration needs at least 20"):
        exporter.export_run(_config(few, data_dir, quantize="int8"), log=lambda line: None)


def test_a_missing_package_is_named_with_the_extra_to_install(small_run, data_dir, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("tf2onnx", "ai_edge_litert") else real_find_spec(name, *a),
    )
    with pytest.raises(
        TfpipeError, match=r"needs the tf2onnx package, which is not installed; pip install 'tfpipe\[export\]'"
    ):
        exporter.export_run(_config(small_run, data_dir, format="onnx"), log=lambda line: None)
    with pytest.raises(TfpipeError, match="running x.tflite needs the ai-edge-litert package"):
        from tfpipe.inference import runtimes

        runtimes.open_model("x.tflite", "litert")
    # The check runs every export with its own runtime: without it the export is refused, not unchecked.
    with pytest.raises(TfpipeError, match=r"checking a litert export needs the ai-edge-litert package.*tfpipe\[export\]"):
        exporter.export_run(_config(small_run, data_dir), log=lambda line: None)


def test_a_failing_onnx_conversion_names_its_cause_and_the_versions(tmp_path):
    class Unconvertible:
        input_shape = (None, 32, 32, 3)

        def export(self, path, **kwargs):
            raise ValueError("Unsupported ops: Counter({'SomeOp': 1})")

    with pytest.raises(TfpipeError, match=r"ONNX export failed \(ValueError: Unsupported ops.*tf2onnx 1\.\d+"):
        formats.write(Unconvertible(), str(tmp_path / "m.onnx"), "onnx", "none")


def test_an_exported_file_without_its_record_or_from_another_run(small_run, data_dir, tmp_path):
    exported = str(tmp_path / "small.onnx")
    exporter.export_run(_config(small_run, data_dir, format="onnx", output=exported), log=lambda line: None)
    record_less = str(tmp_path / "alone.onnx")
    shutil.copy(exported, record_less)
    with pytest.raises(
        TfpipeError, match="its record .*alone.onnx.json \\(class names, preprocessing\\) is missing"
    ):
        predict.load(None, record_less)
    assert predict.load(small_run, record_less).class_names == ("ellipse", "rectangle")  # names from the run
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps({"class_names": ["cat", "dog"]}))
    with pytest.raises(TfpipeError, match="exported from a model of classes \\['ellipse', 'rectangle'\\]"):
        predict.load(str(other), exported)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer")
    record = read_json(exported + ".json")
    (tmp_path / "broken.tflite.json").write_text(json.dumps(dict(record, class_names=["a", "b"])))
    with pytest.raises(TfpipeError, match="is not a litert model its runtime can load"):
        predict.load(None, str(broken))


@pytest.mark.slow
def test_the_tool_refuses_bad_input_in_one_line():
    assert_one_line_error(run_tool("export_model", timeout=120), "export_model", "--model_dir is required")


def test_bench_predict_measures_an_exported_model(small_run, data_dir, photos, tmp_path):
    from tfpipe.bench import prediction

    output = str(tmp_path / "small.tflite")
    exporter.export_run(_config(small_run, data_dir, output=output), log=lambda line: None)
    results = prediction.measure(predict.load(None, output), photos, batch_size=2, repeats=2, latency_images=3)
    assert results["runtime"] == "litert" and results["images"] == 5 and results["batch_size"] == 2
    assert len(results["predict"]) == len(results["direct"]) == 2 and min(results["predict"] + results["direct"]) > 0
    assert results["latency_ms"]["images"] == 3 and 0 < results["latency_ms"]["median"] <= results["latency_ms"]["p90"]
