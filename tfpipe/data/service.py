"""tf.data service: run the pipeline's preprocessing on remote workers.

A dispatcher (fault tolerant, journaling to a work directory) hands the
pipeline to its workers; the trainer only receives finished batches.

    sharding "off"      every worker runs the whole pipeline: each epoch the
                        trainer gets one copy of the data per worker (for
                        augmentation-heavy training, where epochs are nominal)
    sharding "dynamic"  the dispatcher hands out pieces of the input; each
                        example is seen exactly once per epoch

Caches do not carry over between epochs on the service (each epoch is a new job
on the workers), so pipelines run there decode every epoch, spread over workers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading

import tensorflow as tf

from tfpipe.data import service_watch
from tfpipe.errors import TfpipeError

SHARDING = {
    "off": tf.data.experimental.service.ShardingPolicy.OFF,
    "dynamic": tf.data.experimental.service.ShardingPolicy.DYNAMIC,
}
# Seconds to wait for the dispatcher to accept the pipeline before giving up.
REGISTER_SECONDS = 10.0
# TensorFlow's defaults let a dead worker go unnoticed for 10 minutes (worker_timeout_ms
# 600,000), during which its trainers wait on it. A worker heartbeats every HEARTBEAT_SECONDS;
# the dispatcher drops one silent for WORKER_TIMEOUT_SECONDS (a few missed heartbeats, so a
# busy worker is not dropped for one late beat); a worker retries an unreachable dispatcher
# for DISPATCHER_TIMEOUT_SECONDS per request.
HEARTBEAT_SECONDS = 2.0
WORKER_TIMEOUT_SECONDS = 15.0
DISPATCHER_TIMEOUT_SECONDS = 60.0
# Seconds without a batch after which a trainer checks that its servers answer
# (tfpipe.data.service_watch); so a lost server stops a run about this long after it goes.
STALL_SECONDS = 30.0
_ADDRESS = re.compile(r"^grpc://[^:/\s]+:\d+$")


@dataclasses.dataclass(frozen=True)
class DataService:
    address: str  # grpc://HOST:PORT of the dispatcher
    sharding: str = "off"
    stall_timeout: float = STALL_SECONDS  # see service_watch; 0: never check

    def __post_init__(self):
        if not _ADDRESS.match(self.address):
            raise TfpipeError(f"--data_service={self.address!r}: give the dispatcher as grpc://HOST:PORT")
        if self.sharding not in SHARDING:
            raise TfpipeError(f"--data_service_sharding={self.sharding!r}: use off or dynamic")
        if not self.stall_timeout >= 0:
            raise TfpipeError(f"--data_service_timeout={self.stall_timeout}: give seconds, or 0 to never check")

    @property
    def dispatcher(self) -> str:
        return self.address.removeprefix("grpc://")

    @property
    def dynamic(self) -> bool:
        return self.sharding == "dynamic"

    def distribute(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
        """`dataset` computed on the service: registered first, so a dispatcher that
        does not answer, or a pipeline it cannot run, fails here with the reason."""
        options = tf.data.Options()
        # The workers rebuild the pipeline from its serialized graph: anything it
        # captures from this process (a variable, a Python function) cannot go along.
        options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.FAIL
        dataset = dataset.with_options(options)
        dataset_id = self._register(dataset)
        received = tf.data.experimental.service.from_dataset_id(
            processing_mode=SHARDING[self.sharding],
            service=self.address,
            dataset_id=dataset_id,
            element_spec=dataset.element_spec,
        )
        return received.map(self._noting_arrival)

    def _noting_arrival(self, *element):
        noted = tf.py_function(lambda: service_watch.note_batch(self.dispatcher), [], tf.bool)
        with tf.control_dependencies([noted]):
            element = tf.nest.map_structure(tf.identity, element)
        return element if len(element) > 1 else element[0]

    def watching(self):
        """A block during which a lost dispatcher or worker stops the process with one
        line instead of hanging it (tfpipe.data.service_watch)."""
        return service_watch.watching(self.dispatcher, self.stall_timeout)

    def _register(self, dataset):
        outcome = {}

        def register():
            try:
                outcome["id"] = tf.data.experimental.service.register_dataset(self.address, dataset)
            except Exception as error:  # noqa: BLE001 - reported below with the reason
                outcome["error"] = error

        # register_dataset retries an unreachable dispatcher for a long time.
        thread = threading.Thread(target=register, daemon=True)
        thread.start()
        thread.join(REGISTER_SECONDS)
        if "error" in outcome:
            reason = re.sub(r"\{\{[^}]*\}\}\s*", "", " ".join(str(outcome["error"]).split()))[:400]
            raise TfpipeError(
                f"tf.data service cannot run this pipeline: {reason}. A pipeline that captures state "
                "(variables, resources) of the trainer's process cannot go to the service's workers"
            )
        if "id" not in outcome:
            raise TfpipeError(
                f"the tf.data service dispatcher at {self.address} did not answer within {REGISTER_SECONDS:.0f} s; "
                "start it with `data_service --role=dispatcher --port=PORT` (and workers) or fix --data_service"
            )
        return outcome["id"]


def optional_service(
    address: str | None, sharding: str = "off", stall_timeout: float = STALL_SECONDS
) -> DataService | None:
    """The service --data_service names (checked now), or None when it is not set."""
    return DataService(address, sharding, stall_timeout) if address else None


def watching(data_service: DataService | None):
    """`data_service.watching()`, or nothing to do without a service."""
    return data_service.watching() if data_service else contextlib.nullcontext()


def start_dispatcher(
    port: int, work_dir: str, worker_timeout: float = WORKER_TIMEOUT_SECONDS
) -> tf.data.experimental.service.DispatchServer:
    """A fault-tolerant dispatcher: after a restart it recovers its state from work_dir.
    A worker silent for `worker_timeout` seconds is dropped with its tasks."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port,
        work_dir=work_dir,
        fault_tolerant_mode=True,
        worker_timeout_ms=_ms(worker_timeout),
        # The dispatcher looks for silent workers only on this cycle (default 10 minutes).
        job_gc_check_interval_ms=_ms(HEARTBEAT_SECONDS),
    )
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(
    port: int,
    dispatcher: str,
    host: str = "localhost",
    heartbeat: float = HEARTBEAT_SECONDS,
    dispatcher_timeout: float = DISPATCHER_TIMEOUT_SECONDS,
) -> tf.data.experimental.service.WorkerServer:
    """A worker registered with `dispatcher` (HOST:PORT), reachable by trainers at host:port."""
    config = tf.data.experimental.service.WorkerConfig(
        dispatcher_address=dispatcher.removeprefix("grpc://"),
        worker_address=f"{host}:%port%",
        port=port,
        heartbeat_interval_ms=_ms(heartbeat),
        dispatcher_timeout_ms=_ms(dispatcher_timeout),
    )
    return tf.data.experimental.service.WorkerServer(config)


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
