"""TensorFlow's own engines: tf.distribute strategies and tf.data service."""

import json
import os
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from helpers.images import imbalanced_folder
from helpers.runs import TINY, fingerprints, read_json, tiny_train_config
from helpers.servers import free_port, start_server, stop
from helpers.tools import REPO, assert_one_line_error, run_bench, run_tool

import tfpipe  # noqa: F401  (registers tfpipe's Keras objects)
from tfpipe import distribute
from tfpipe.data import pipeline, service
from tfpipe.data.pipeline import PipelineConfig
from tfpipe.errors import TfpipeError
from tfpipe.train import train


@pytest.mark.slow
def test_mirrored_over_two_cpus_ends_with_the_weights_of_one_device(tmp_path, data_dir):
    # A 3:1 folder with --class_weight=balanced: the class weights must reach every replica's loss.
    folder = imbalanced_folder(tmp_path / "images", (30, 10))
    script = os.path.join(REPO, "tests", "helpers", "mirrored_vs_one_device.py")
    result = subprocess.run(
        [sys.executable, script, data_dir, str(tmp_path), f"folder:{folder}", "balanced"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == {"one_device": 1, "mirrored": 2}
    assert report["max_abs_difference"] < 1e-3  # after 8 steps, both phases
    assert report["test_loss"]["mirrored"] == pytest.approx(report["test_loss"]["one_device"], rel=1e-3)
    assert report["class_weights"]["mirrored"] == report["class_weights"]["one_device"]
    assert report["class_weights"]["mirrored"]["c1"] > 1.5  # the rare class weighs more


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
                [
                    sys.executable,
                    os.path.join(REPO, "bin", "train"),
                    "--strategy=multi_worker",
                    f"--dataset={TINY}",
                    f"--data_dir={data_dir}",
                    f"--model_dir={model_dir}",
                    "--image_size=32",
                    "--alpha=0.35",
                    "--batch_size=8",
                    "--seed=1",
                    "--initial_epochs=1",
                    "--fine_tune_epochs=1",
                ],
                env=dict(os.environ, TF_CONFIG=json.dumps(tf_config)),
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
    from tfpipe import augment

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


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "--role is required"),
        (["--role=dispatcher"], "--port=None"),
        (["--role=worker", "--port=0"], "--port=0"),
        (["--role=worker", "--port=5999"], "needs --dispatcher"),
    ],
)
def test_data_service_tool_bad_input(flags, message):
    assert_one_line_error(run_tool("data_service", *flags, timeout=120), "data_service", message)
