"""tf.data service faults: a lost worker or dispatcher stops a reader with one line, never hangs it."""

import signal
import subprocess
import sys
import time

import pytest
from helpers.runs import TINY
from helpers.servers import free_port, start_server, start_workers, stop
from helpers.tools import REPO, assert_one_line_error, run_bench

from tfpipe.data import service, service_watch

# The readers below give up this soon, so a fault surfaces within seconds.
STALL = "--data_service_timeout=3"


def _wait_until(condition, seconds=30):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


@pytest.fixture
def in_process_cluster(tmp_path):
    dispatcher = service.start_dispatcher(0, str(tmp_path / "journal"))
    address = dispatcher.target.removeprefix("grpc://")
    workers = [service.start_worker(0, address) for _ in range(2)]
    _wait_until(lambda: len(service_watch.dispatcher_workers(address) or ()) == 2)
    yield dispatcher, address, workers
    for server in (*workers, dispatcher):
        server._stop()


def test_the_watch_names_the_server_that_stopped(in_process_cluster):
    dispatcher, address, (survivor, lost) = in_process_cluster
    assert service_watch.lost_server_message(address, 30, set()) is None  # slow, not lost
    known = set(service_watch.dispatcher_workers(address))
    assert known == {survivor._address, lost._address}
    lost._stop()
    message = service_watch.lost_server_message(address, 30, known)
    assert f"worker {lost._address} does not answer" in message
    assert f"--port={lost._address.rpartition(':')[2]} --dispatcher={address}" in message
    assert survivor._address not in message.split("Restart")[0]
    dispatcher._stop()
    message = service_watch.lost_server_message(address, 30, known)
    assert f"dispatcher at grpc://{address} does not answer" in message


def test_the_watch_stops_a_silent_reader_only_when_a_server_is_gone(in_process_cluster):
    _, address, (_, lost) = in_process_cluster
    messages = []
    with service_watch.watching(address, timeout=0.5, stop=messages.append):
        time.sleep(2.5)  # silent, but every server answers: slow batches are no fault
        assert messages == []
        lost._stop()
        _wait_until(lambda: messages, seconds=15)
    assert len(messages) == 1 and lost._address in messages[0]


def test_batches_that_arrive_keep_the_watch_quiet(in_process_cluster, tiny_source):
    from tfpipe.data import pipeline

    _, address, (_, lost) = in_process_cluster
    data_service = service.DataService(f"grpc://{address}", "dynamic", stall_timeout=0.5)
    dataset = pipeline.build(
        tiny_source, "train", pipeline.PipelineConfig(image_size=32, batch_size=8), training=False, service=data_service
    )
    messages = []
    with service_watch.watching(address, timeout=1.5, stop=messages.append) as watch:
        for _ in range(4):
            silent_since = time.monotonic()
            for _ in dataset:
                time.sleep(0.1)
            assert watch._last_batch >= silent_since  # every batch from the service is noted
    assert messages == []


def _reader(data_dir, tmp_path, dispatcher_port, sharding):
    """bench_input reading many short epochs from the service, its output line by line."""
    return subprocess.Popen(
        [
            sys.executable,
            f"{REPO}/bin/bench_input",
            f"--dataset={TINY}",
            f"--data_dir={data_dir}",
            "--image_size=32",
            "--batch_size=8",
            "--epochs=2000",
            "--noclassic",
            "--noclassic_tf_defaults",
            f"--data_service=grpc://localhost:{dispatcher_port}",
            f"--data_service_sharding={sharding}",
            STALL,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(process, text):
    for line in process.stdout:
        if text in line:
            return
    raise AssertionError(f"the reader ended before {text!r}: {process.stderr.read()[-2000:]}")


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    "sharding, victim",
    [("off", "worker"), ("dynamic", "worker"), ("off", "dispatcher")],
)
def test_a_server_killed_mid_run_stops_the_reader_with_one_line(tmp_path, data_dir, sharding, victim):
    dispatcher_port = free_port()
    dispatcher = start_server("dispatcher", dispatcher_port, f"--work_dir={tmp_path / 'journal'}")
    worker_ports = [free_port(), free_port()]
    workers = start_workers(worker_ports, dispatcher_port)
    reader = _reader(data_dir, tmp_path, dispatcher_port, sharding)
    try:
        _read_until(reader, "tfpipe epoch 3/")
        (workers[0] if victim == "worker" else dispatcher).send_signal(signal.SIGKILL)
        killed = time.monotonic()
        _, stderr = reader.communicate(timeout=120)
        surfaced = time.monotonic() - killed
    finally:
        reader.kill()
        stop(dispatcher, *workers)
    result = subprocess.CompletedProcess(reader.args, reader.returncode, "", stderr)
    lost = (
        f"worker localhost:{worker_ports[0]}"
        if victim == "worker"
        else f"dispatcher at grpc://localhost:{dispatcher_port}"
    )
    assert_one_line_error(result, "bench_input", f"{lost} does not answer")
    assert surfaced < 60


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_dispatcher_restarted_from_a_journal_of_gone_workers_names_them(tmp_path, data_dir):
    dispatcher_port, worker_port = free_port(), free_port()
    journal = f"--work_dir={tmp_path / 'journal'}"
    dispatcher = start_server("dispatcher", dispatcher_port, journal)
    worker = start_server("worker", worker_port, f"--dispatcher=localhost:{dispatcher_port}")
    try:
        _wait_until(lambda: service_watch.dispatcher_workers(f"localhost:{dispatcher_port}"))
    finally:
        stop(dispatcher, worker)
    dispatcher = start_server("dispatcher", dispatcher_port, journal)  # its port reused at once
    try:
        started = time.monotonic()
        result = run_bench(
            data_dir,
            tmp_path / "bench.json",
            "--epochs=2",
            "--noclassic",
            "--noclassic_tf_defaults",
            f"--data_service=grpc://localhost:{dispatcher_port}",
            STALL,
        )
        assert time.monotonic() - started < 90
    finally:
        stop(dispatcher)
    assert_one_line_error(result, "bench_input", f"worker localhost:{worker_port} does not answer")
