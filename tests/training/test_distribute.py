"""TensorFlow's own engines: tf.distribute strategies and tf.data service."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.images import imbalanced_folder
from helpers.runs import TINY, TINY_BASE_FLAGS, fingerprints, read_json, tiny_train_config
from helpers.servers import free_port, start_server, stop
from helpers.tools import REPO, assert_one_line_error, bad_input_runs, run_bench, tool_command

import tfpipe  # noqa: F401  (registers tfpipe's Keras objects)
from tfpipe.data import pipeline, service
from tfpipe.data.pipeline import PipelineConfig
from tfpipe.errors import TfpipeError
from tfpipe.models import classifier as model_lib
from tfpipe.models.augment import DEFAULT_AUGMENT
from tfpipe.models.classifier import TransferClassifier
from tfpipe.training import distribute
from tfpipe.training.train import train

# Split sizes that leave a replica short or empty at the last step (batch 8, 4 per replica):
# 28 and 29 training examples make 3 global batches and drop the rest; 3 validation examples
# leave the second replica nothing, 5 leave it one; the test split is scored outside the
# strategy. oneDNN is forced on in the matrix: with it, TF 2.21's conv2d returns an empty batch
# unchanged and the next layer fails (BUILD_NOTES.md), so an empty replica batch fails on any
# x86 CPU, whatever the machine would choose; one short case runs with it off, as on CPUs
# without AVX512_VNNI, AVX512_BF16 or AMX.
_SPLITS_28 = dict(train_split="train[:28]", val_split="train[28:31]", test_split="train[31:]")
_SPLITS_29 = dict(train_split="train[:29]", val_split="train[29:34]", test_split="train[34:]")
_SIZES = {"train[:28]": (28, 3, 9), "train[:29]": (29, 5, 6)}
# What each phase's batches hold: images (end to end), the frozen base's pooled features, or
# the activations at the fine-tune boundary, one tensor (tiny base layer 9) or two (layer 10,
# where the block's skip connection and its own path both cross).
PHASE_1 = {"end_to_end": dict(fast_feature_extraction=False), "features": dict(fast_feature_extraction=True)}
PHASE_2 = {
    "end_to_end": dict(cached_fine_tuning=False),
    "cached_one_tensor": dict(cached_fine_tuning=True, fine_tune_at="9"),
    "cached_two_tensors": dict(cached_fine_tuning=True, fine_tune_at="10"),
}
# Class weights add a third component to every batch: half the cases have them, so that each
# phase-1 and each phase-2 path runs with and without.
_WEIGHTED = {("end_to_end", "end_to_end"), ("end_to_end", "cached_two_tensors"), ("features", "cached_one_tensor")}
MATRIX = {
    f"{one}-{two}": dict(
        **PHASE_1[one],
        **PHASE_2[two],
        **(dict(_SPLITS_28, class_weight="balanced") if (one, two) in _WEIGHTED else _SPLITS_29),
    )
    for one in PHASE_1
    for two in PHASE_2
}


def _mirrored_vs_one_device(tmp_path, data_dir, onednn: str, cases: dict) -> dict:
    """Runs helpers/mirrored_vs_one_device.py on a 3:1 folder from random weights (class weights
    must reach every replica's loss, and padding examples no loss or metric); its report per case."""
    folder = imbalanced_folder(tmp_path / "images", (30, 10))
    script = os.path.join(REPO, "tests", "helpers", "mirrored_vs_one_device.py")
    cases = {name: dict(overrides, dataset=f"folder:{folder}") for name, overrides in cases.items()}
    result = subprocess.run(
        [sys.executable, script, data_dir, str(tmp_path), json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=900,
        env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS=onednn),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")  # one subprocess for the whole matrix
def strategy_matrix(tmp_path_factory, data_dir):
    return _mirrored_vs_one_device(tmp_path_factory.mktemp("matrix"), data_dir, "1", MATRIX)


def _check_mirrored_matches_one_device(report, overrides):
    assert "error" not in report, report.get("error")
    assert report["replicas"] == {"one_device": 1, "mirrored": 2}
    assert report["max_abs_difference"] < 1e-3  # after 6 steps, both phases
    one, mirrored = report["history"]["one_device"], report["history"]["mirrored"]
    assert [e["epoch"] for e in mirrored] == [e["epoch"] for e in one] != []
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        # Every validation example counted once, and no padding: the same mean as on one device.
        assert [e[key] for e in mirrored] == pytest.approx([e[key] for e in one], rel=1e-3, abs=1e-5), key
    train_size, val_size, test_size = _SIZES[overrides["train_split"]]
    results = report["results"]
    assert results["mirrored"]["examples"] == results["one_device"]["examples"]
    assert list(results["mirrored"]["examples"].values()) == [train_size, val_size, test_size]
    assert report["test_examples"] == {"one_device": test_size, "mirrored": test_size}
    assert results["mirrored"]["test_loss"] == pytest.approx(results["one_device"]["test_loss"], rel=1e-3)
    dropped = f"the last {train_size % 8} of the {train_size} examples in each epoch's shuffled order are left out"
    for name in ("one_device", "mirrored"):
        assert any(dropped in line for line in report["log"][name]), report["log"][name]
        assert results[name]["fast_feature_extraction"] == overrides["fast_feature_extraction"]
    if overrides.get("class_weight") == "balanced":
        assert results["mirrored"]["class_weights"] == results["one_device"]["class_weights"]
        assert results["mirrored"]["class_weights"]["c1"] > 1.5  # the rare class weighs more


@pytest.mark.slow
@pytest.mark.xdist_group("strategy_matrix")
@pytest.mark.parametrize("case", list(MATRIX))
def test_mirrored_over_two_cpus_ends_with_the_weights_of_one_device(strategy_matrix, case):
    overrides = MATRIX[case]
    report = strategy_matrix[case]
    _check_mirrored_matches_one_device(report, overrides)
    # The phase-2 path the case asked for is the one both runs took, through the boundary it names.
    cached = {name: report["results"][name]["cached_fine_tuning"] for name in ("one_device", "mirrored")}
    if overrides["cached_fine_tuning"]:
        tensors = 1 if overrides["fine_tune_at"] == "9" else 2
        assert cached["mirrored"] == cached["one_device"] and cached["mirrored"].count("float32") == tensors
    else:
        assert cached == {"one_device": None, "mirrored": None}


@pytest.mark.slow
def test_mirrored_phase_1_with_onednn_off(tmp_path, data_dir):
    overrides = dict(MATRIX["features-end_to_end"], class_weight="balanced", fine_tune_epochs=0)
    report = _mirrored_vs_one_device(tmp_path, data_dir, "0", {"phase-1": overrides})["phase-1"]
    _check_mirrored_matches_one_device(report, overrides)


def test_replica_batches_give_every_replica_a_full_batch_and_every_example_once():
    # 11 examples, 2 pipelines of 2 replicas with 2 examples each: 3 steps (ceil(11 / 8)).
    examples = tf.data.Dataset.range(11).map(lambda i: (tf.fill([2], i), i))
    seen = []
    for index in range(2):
        batches = examples.shard(2, index).batch(4)
        out = list(distribute.replica_batches(batches, per_replica=2, local_replicas=2, steps=3))
        assert len(out) == 6  # steps x local replicas, the same for both pipelines
        for features, labels, weights in out:
            assert features.shape == (2, 2) and labels.shape == (2,) and weights.shape == (2,)
            seen += [int(label) for label, weight in zip(labels, weights) if weight > 0]
            assert all(int(label) == 0 for label, weight in zip(labels, weights) if weight == 0)
    assert sorted(seen) == list(range(11))


@pytest.mark.slow
def test_the_issue_command_trains_mirrored_with_a_two_tensor_boundary_and_scores_the_whole_test_split(
    tmp_path, data_dir
):
    # MobileNetV2 at layer 100: the cached boundary is two tensors (a skip connection crosses it).
    folder = imbalanced_folder(tmp_path / "images", (30, 10))
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tests", "helpers", "on_two_cpus.py"),
            os.path.join(REPO, "bin", "train"),
            "--strategy=mirrored",
            f"--dataset=folder:{folder}",
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            "--batch_size=8",
            "--backbone=mobilenet_v2",
            "--alpha=0.35",
            "--weights=none",
            "--image_size=32",
            "--augment=none",
            "--nofast_feature_extraction",
            "--class_weight=balanced",
            "--initial_epochs=1",
            "--fine_tune_epochs=1",
            "--noexport",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Strategy: MirroredStrategy, 2 replicas" in result.stdout
    results = read_json(model_dir / "results.json")
    assert results["cached_fine_tuning"].count("float32") == 2, results["cached_fine_tuning"]
    assert [r["epoch"] for r in read_json(model_dir / "history.json")] == [1, 2]
    test_examples = results["examples"]["test"]
    assert test_examples == 4 and read_json(model_dir / "evaluation" / "report.json")["examples"] == test_examples


@pytest.mark.parametrize("weighted", [False, True], ids=["no-weights", "class-weights"])
def test_replica_batches_pad_every_tensor_of_a_nested_batch(weighted):
    # Cached activations at a boundary of two tensors of different shapes: x is a pair.
    def example(i):
        x = (tf.fill([2, 2, 3], i), tf.fill([2, 2, 5], -i))
        return (x, i, tf.cast(i, tf.float32) + 1) if weighted else (x, i)

    batches = tf.data.Dataset.range(7).map(example).batch(4)  # 4 + 3 examples; 2 steps of 2 x 2
    out = list(distribute.replica_batches(batches, per_replica=2, local_replicas=2, steps=2))
    assert len(out) == 4
    seen = []
    for (first, second), labels, weights in out:
        assert first.shape == (2, 2, 2, 3) and second.shape == (2, 2, 2, 5) and weights.shape == (2,)
        for j, (label, weight) in enumerate(zip(labels.numpy(), weights.numpy())):
            if weight > 0:
                seen.append(int(label))
                assert weight == (label + 1 if weighted else 1)
                assert np.all(first[j] == label) and np.all(second[j] == -label)
            else:  # padding: zeros in every tensor
                assert label == 0 and not np.any(first[j]) and not np.any(second[j])
    assert seen == list(range(7))


def test_replica_batches_stop_a_training_epoch_at_its_steps_and_keep_sample_weights():
    examples = tf.data.Dataset.range(20).map(lambda i: (tf.fill([3], i), i, tf.cast(i, tf.float32) + 1))
    batches = examples.batch(4, drop_remainder=True)  # 5 batches; 20 // 8 = 2 steps
    out = list(distribute.replica_batches(batches, per_replica=2, local_replicas=2, steps=2))
    assert [list(labels.numpy()) for _, labels, _ in out] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert [list(weights.numpy()) for _, _, weights in out][0] == [1.0, 2.0]


def test_padding_examples_count_in_no_loss_or_metric():
    inputs = keras.Input((3,))
    model = TransferClassifier(inputs, keras.layers.Dense(1)(inputs))
    model_lib.compile_classifier(model, 2, keras.optimizers.SGD(0.0))
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)).astype("float32"), np.array([0, 1, 1, 0, 1])
    plain = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    padded_x = np.concatenate([x, np.zeros((3, 3), "float32")])
    weights = np.array([1, 1, 1, 1, 1, 0, 0, 0], "float32")
    padded = tf.data.Dataset.from_tensors((padded_x, np.concatenate([y, [1, 1, 1]]), weights))
    with_padding = model.evaluate(padded, verbose=0, return_dict=True)
    assert with_padding == pytest.approx(plain, rel=1e-6)


@pytest.mark.slow
def test_two_workers_train_together_and_finish_with_identical_weights(tmp_path, data_dir):
    ports = [free_port(), free_port()]
    model_dir = tmp_path / "run"
    workers = []
    for index in range(2):
        tf_config = {
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
        workers.append(
            subprocess.Popen(
                tool_command(
                    "train",
                    "--strategy=multi_worker",
                    f"--dataset={TINY}",
                    f"--data_dir={data_dir}",
                    f"--model_dir={model_dir}",
                    "--image_size=32",
                    "--batch_size=8",
                    "--seed=1",
                    "--initial_epochs=1",
                    "--fine_tune_epochs=1",
                    *TINY_BASE_FLAGS,
                    tiny_base=True,
                ),
                env=dict(os.environ, TF_CONFIG=json.dumps(tf_config), TF_ENABLE_ONEDNN_OPTS="1"),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [worker.communicate(timeout=600) for worker in workers]
    for worker, (out, err) in zip(workers, outputs):
        assert worker.returncode == 0, err[-3000:]
    assert "2 replicas; this is worker-0 (chief)" in outputs[0][0]
    chief = keras.models.load_model(model_dir / "final.keras")
    other = keras.models.load_model(model_dir / "workers" / "worker-1" / "final.keras")
    for a, b in zip(chief.weights, other.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    history = read_json(model_dir / "history.json")
    assert [r["epoch"] for r in history] == [1, 2]
    assert (model_dir / "export").is_dir() and not (model_dir / "workers" / "worker-1" / "export").exists()


@pytest.mark.parametrize(
    "tf_config, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "TF_CONFIG is malformed"),
        ('{"cluster": {"worker": ["localhost:1"]}}', "TF_CONFIG is malformed"),
        ('{"cluster": {"worker": "localhost:1"}, "task": {"type": "worker", "index": 0}}', "must list HOST:PORT"),
        ('{"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}', "is not in its cluster"),
    ],
)
def test_multi_worker_needs_a_well_formed_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(TfpipeError, match=message):
        distribute.make_strategy("multi_worker")


def test_multi_worker_without_tf_config_is_one_line_from_the_cli(tmp_path, data_dir):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "bin", "train"),
            "--strategy=multi_worker",
            f"--dataset={TINY}",
            f"--data_dir={data_dir}",
            f"--model_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert_one_line_error(result, "train", "--strategy=multi_worker needs the TF_CONFIG")


def test_global_batch_must_split_over_replicas():
    assert distribute.per_replica_batch(32, 4) == 8
    with pytest.raises(TfpipeError, match="does not split evenly over 3 replicas"):
        distribute.per_replica_batch(32, 3)


@pytest.fixture(scope="module")
def local_service(tmp_path_factory):
    """An in-process dispatcher (fault tolerant) and two workers on localhost."""
    dispatcher = service.start_dispatcher(0, str(tmp_path_factory.mktemp("dispatcher")))
    port = dispatcher.target.rsplit(":", 1)[1]
    workers = [service.start_worker(0, f"localhost:{port}") for _ in range(2)]
    yield dispatcher.target
    del workers  # the servers stop with the test process


def test_dynamic_sharding_sees_every_example_exactly_once_per_epoch(tiny_source, local_service):
    config = PipelineConfig(image_size=32, batch_size=3)
    dynamic = service.DataService(local_service, "dynamic")
    local = sorted(fingerprints(pipeline.build(tiny_source, "train", config, training=False)))
    evaluation = pipeline.build(tiny_source, "train", config, training=False, service=dynamic)
    training = pipeline.build(tiny_source, "train", config, training=True, service=dynamic)
    for _ in range(2):
        assert sorted(fingerprints(evaluation)) == local  # all 40, none twice
        seen = fingerprints(training)
        # Training batches drop each worker's last partial batch, as drop_remainder does locally.
        assert len(seen) == len(set(seen)) and set(seen) <= set(local) and len(seen) >= 40 - 2 * 2


def test_a_csv_dataset_goes_through_the_service_like_any_other(tmp_path, local_service):
    from tfpipe.data import sources

    folder = imbalanced_folder(tmp_path / "images", (6, 6))
    rows = [f"c{label}/{i}.png,{label}" for label in (0, 1) for i in range(6)]
    (tmp_path / "images" / "labels.csv").write_text("file,label\n" + "\n".join(rows) + "\n")
    source = sources.open_source(f"csv:{folder}/labels.csv", str(tmp_path / "data"))
    config = PipelineConfig(image_size=16, batch_size=4)
    local = sorted(fingerprints(pipeline.build(source, "train", config, training=False)))
    on_service = pipeline.build(
        source, "train", config, training=False, service=service.DataService(local_service, "dynamic")
    )
    assert sorted(fingerprints(on_service)) == local and len(local) == 12


def test_sharding_off_gives_each_worker_the_whole_pipeline(tiny_source, local_service):
    config = PipelineConfig(image_size=32, batch_size=4)
    on_service = pipeline.build(
        tiny_source, "train", config, training=False, service=service.DataService(local_service, "off")
    )
    seen = fingerprints(on_service)
    assert len(seen) == 80 and len(set(seen)) == 40


def test_a_training_run_takes_its_batches_from_the_service(tmp_path, data_dir, local_service, monkeypatch):
    from tfpipe.data import service_watch

    delivered = []  # every batch read from the service is noted by the watch: count them
    note = service_watch.note_batch
    monkeypatch.setattr(
        service_watch, "note_batch", lambda dispatcher: delivered.append(dispatcher) or note(dispatcher)
    )
    config = tiny_train_config(
        tmp_path,
        data_dir,
        initial_epochs=1,
        fine_tune_epochs=0,
        augment=DEFAULT_AUGMENT,  # with none, phase 1 would read its features locally, not from the service
        data_service=local_service,
        data_service_sharding="dynamic",
    )
    results = train(config, log=lambda _: None)
    history = read_json(tmp_path / "run" / "history.json")
    assert len(history) == 1 and np.isfinite(history[0]["loss"]) and results["test_accuracy"] is not None
    # 32 training images in batches of 8 (less a worker's partial batch), plus the validation batch
    assert len(delivered) >= 4 and set(delivered) == {local_service.removeprefix("grpc://")}


def test_an_unreachable_dispatcher_fails_within_15_seconds(tiny_source):
    address = f"grpc://localhost:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TfpipeError, match="did not answer within"):
        pipeline.build(
            tiny_source,
            "train",
            PipelineConfig(image_size=32, batch_size=4),
            training=True,
            service=service.DataService(address),
        )
    assert time.monotonic() - started < 15


def test_a_pipeline_the_service_cannot_run_is_refused_with_the_reason(tiny_source, local_service):
    from tfpipe.models import augment

    flips = augment.build(augment.parse("flip"), seed=1)  # Keras layers hold seed variables
    with pytest.raises(TfpipeError, match="cannot run this pipeline: .*Serialization error.*captures state"):
        pipeline.build(
            tiny_source,
            "train",
            PipelineConfig(image_size=32, batch_size=4),
            training=True,
            augmentation=flips,
            service=service.DataService(local_service, "dynamic"),
        )


@pytest.mark.parametrize("address", ["localhost:5050", "grpc://localhost", "http://host:1"])
def test_malformed_service_address(address):
    with pytest.raises(TfpipeError, match="grpc://HOST:PORT"):
        service.DataService(address)


@pytest.mark.slow
def test_data_service_tool_serves_bench_input(tmp_path, data_dir):
    dispatcher_port = free_port()
    servers = [start_server("dispatcher", dispatcher_port, f"--work_dir={tmp_path / 'journal'}")]
    try:
        servers.append(start_server("worker", free_port(), f"--dispatcher=localhost:{dispatcher_port}"))
        out = tmp_path / "bench.json"
        result = run_bench(
            data_dir,
            out,
            "--epochs=2",
            "--noclassic",
            "--noclassic_tf_defaults",
            f"--data_service=grpc://localhost:{dispatcher_port}",
            "--data_service_sharding=dynamic",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        data = read_json(out)
        assert data["data_service"] == f"grpc://localhost:{dispatcher_port}"
        assert data["tfpipe"]["warm_images_per_sec"] > 0 and data["num_images"] == 32
        assert os.listdir(tmp_path / "journal")  # fault-tolerant mode journals its state
    finally:
        stop(*servers)


DATA_SERVICE_BAD_INPUT = [
    ([], "--role is required"),
    (["--role=dispatcher"], "--port=None"),
    (["--role=worker", "--port=0"], "--port=0"),
    (["--role=worker", "--port=5999"], "needs --dispatcher"),
]


@pytest.fixture(scope="session")  # one tool process for all the cases, even when xdist interleaves modules
def data_service_bad_input():
    return bad_input_runs("data_service", DATA_SERVICE_BAD_INPUT)


@pytest.mark.xdist_group("data_service_bad_input")
@pytest.mark.parametrize("flags, message", DATA_SERVICE_BAD_INPUT)
def test_data_service_tool_bad_input(data_service_bad_input, flags, message):
    assert_one_line_error(data_service_bad_input[message], "data_service", message)
