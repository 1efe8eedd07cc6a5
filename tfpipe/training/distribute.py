"""tf.distribute strategies, and datasets spread over their replicas.

    auto          MirroredStrategy when more than one GPU is visible, else the default strategy
    one_device    OneDeviceStrategy on the first GPU, or the CPU
    mirrored      MirroredStrategy over all local GPUs (or the given devices)
    multi_worker  MultiWorkerMirroredStrategy, configured by the TF_CONFIG environment variable

Models, optimizers and metrics are created under strategy.scope(); datasets
come from distribute_datasets_from_function, one input pipeline per worker,
each reading its own shard and batching its replicas' share of the global batch,
padded so that no replica is ever handed an empty batch (replica_batches).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

import tensorflow as tf

from tfpipe.data import order
from tfpipe.errors import TfpipeError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker")


def check_strategy(name: str) -> None:
    """Raises TfpipeError for an unknown --strategy; creates nothing."""
    if name not in STRATEGIES:
        raise TfpipeError(f"--strategy={name!r}: use one of {', '.join(STRATEGIES)}")


# One strategy per kind and devices in a process. Collective all-reduces of a second
# MirroredStrategy over the same devices reuse the first one's instance keys, and a model
# trained under it fails with "Shape mismatch in the collective instance" (tensorflow issues
# 61314, 62790): seen here on the second of several runs in one process.
_STRATEGIES: dict = {}


def make_strategy(name: str, devices: list[str] | None = None) -> tf.distribute.Strategy:
    """The strategy `name` stands for (module docstring), created once per process and reused by
    every later run in it."""
    check_strategy(name)
    key = (name, tuple(devices or ()))
    if key not in _STRATEGIES:
        _STRATEGIES[key] = _new_strategy(name, devices)
    return _STRATEGIES[key]


def _new_strategy(name: str, devices: list[str] | None) -> tf.distribute.Strategy:
    if name == "multi_worker":
        # Collective ops must be configured before anything initializes TensorFlow
        # (listing devices does), so this comes first.
        read_tf_config()
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        if strategy.cluster_resolver.task_type is None:
            raise TfpipeError("TF_CONFIG names no task for this worker")
        return strategy
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy(devices)


def read_tf_config() -> dict:
    """TF_CONFIG, checked: a worker list and this process's task in it."""
    raw = os.environ.get("TF_CONFIG")
    example = (
        'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}\''
    )
    if not raw:
        raise TfpipeError(
            f"--strategy=multi_worker needs the TF_CONFIG environment variable on every worker, e.g. {example}"
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise TfpipeError(
            f"TF_CONFIG is malformed ({type(error).__name__}: {error}); expected e.g. {example}"
        ) from None
    if not isinstance(workers, list) or not workers or not all(isinstance(w, str) and ":" in w for w in workers):
        raise TfpipeError(f"TF_CONFIG cluster.worker must list HOST:PORT addresses, got {workers!r}")
    members = config["cluster"].get(task_type)
    if task_type not in ("worker", "chief") or not isinstance(members, list) or not 0 <= index < len(members):
        raise TfpipeError(f"TF_CONFIG task {task_type}:{index} is not in its cluster {config['cluster']}")
    return config


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where this process sits in the run: replicas, and whether it writes the outputs."""

    num_replicas: int
    is_chief: bool
    task: str  # e.g. "worker-1"; "" on a single machine

    @classmethod
    def of(cls, strategy: tf.distribute.Strategy) -> Placement:
        resolver = getattr(strategy, "cluster_resolver", None)
        task_type = getattr(resolver, "task_type", None)
        if not task_type:
            return cls(strategy.num_replicas_in_sync, True, "")
        index = resolver.task_id or 0
        has_chief = "chief" in resolver.cluster_spec().as_dict()
        chief = task_type == "chief" or (task_type == "worker" and index == 0 and not has_chief)
        return cls(strategy.num_replicas_in_sync, chief, f"{task_type}-{index}")


def per_replica_batch(global_batch: int, num_replicas: int) -> int:
    if global_batch % num_replicas:
        raise TfpipeError(
            f"--batch_size={global_batch} does not split evenly over {num_replicas} replicas; "
            f"use a multiple of {num_replicas}"
        )
    return global_batch // num_replicas


def distributed(
    strategy: tf.distribute.Strategy,
    make_epochs: Callable,
    global_batch: int,
    *,
    examples: int,
    training: bool,
    epochs: tuple[int, int, int] | None = None,
):
    """A dataset for model.fit under `strategy`, in which no replica ever gets an empty batch.

    make_epochs(batch_size, shard) prepares one input pipeline (its cache filled, in Python) and
    returns one_epoch(epoch, start_step) -> that epoch's (x, y) or (x, y, sample_weight) batches,
    without the last partial batch when training; shard is (pipelines, this pipeline's index)
    when there are several. examples: how many examples an epoch serves in all.
    epochs: (first, end, start_step): a training stream of epochs first .. end-1 in one
      dataset, epoch `first` from step `start_step`, for fit with steps_per_epoch;
      None: one epoch (epoch 0), as evaluation and the data service read it.

    On one replica the plain dataset is returned, so Keras keeps its known size.
    On several, each pipeline serves the same number of steps, and every replica
    a full batch at each step (see replica_batches). Callers check
    per_replica_batch() before any long work; it is not repeated here.
    """
    steps = steps_per_epoch(examples, global_batch, training=training)

    def stream(batch_size, shard, fitted):
        one_epoch = make_epochs(batch_size, shard)
        if epochs is None:
            return fitted(one_epoch(0, 0), steps)
        first, end, start_step = epochs
        return order.epochs(first, end, lambda epoch, start: fitted(one_epoch(epoch, start), steps - start), start_step)

    if strategy.num_replicas_in_sync == 1 and not getattr(strategy, "cluster_resolver", None):
        return stream(global_batch, None, lambda batches, _: batches)

    def dataset_fn(context: tf.distribute.InputContext):
        pipelines = context.num_input_pipelines
        shard = (pipelines, context.input_pipeline_id) if pipelines > 1 else None
        per_replica = context.get_per_replica_batch_size(global_batch)
        local_replicas = strategy.num_replicas_in_sync // pipelines
        return stream(
            per_replica * local_replicas,
            shard,
            lambda batches, count: replica_batches(batches, per_replica, local_replicas, count),
        )

    return strategy.distribute_datasets_from_function(dataset_fn)


def steps_per_epoch(examples: int, global_batch: int, *, training: bool) -> int:
    """Training drops the last partial global batch, as one device's drop_remainder
    does; evaluation keeps it (padded, see replica_batches)."""
    return examples // global_batch if training else -(-examples // global_batch)


def dropped_per_epoch(examples: int, global_batch: int) -> int:
    """Training examples an epoch leaves out: the last partial global batch."""
    return examples % global_batch


def replica_batches(batches: tf.data.Dataset, per_replica: int, local_replicas: int, steps: int) -> tf.data.Dataset:
    """One pipeline's batches of per_replica * local_replicas examples -> exactly
    `steps` * local_replicas batches of `per_replica` examples, each with a sample weight.

    Why: tf.distribute hands a replica whose pipeline ran out an empty batch, and
    on CPUs where TensorFlow turns oneDNN on, TF 2.21's conv2d returns an empty
    input unchanged, so the next layer fails on the shape (BUILD_NOTES.md, "The oneDNN empty-batch fact"). So
    every replica gets a full batch at every step, and every pipeline as many
    steps as the others: a short last batch is padded, and a pipeline with fewer
    batches than `steps` gets whole batches of padding. Padding examples are zeros
    with sample weight 0, which the classifier's steps leave out of the loss and
    every metric (model.TransferClassifier), so each real example counts once.
    A pipeline with more batches than `steps` (training: the last partial global
    batch) stops at `steps`.
    """
    pipeline_batch = per_replica * local_replicas
    weighted = batches.map(_with_sample_weight)
    padded = weighted.map(lambda *element: _padded_to(element, pipeline_batch))
    filler = tf.data.Dataset.from_tensors(
        tf.nest.map_structure(
            lambda spec: tf.zeros([pipeline_batch, *spec.shape[1:]], spec.dtype), weighted.element_spec
        )
    ).repeat()
    exact = padded.concatenate(filler).take(steps)
    if local_replicas > 1:
        exact = exact.rebatch(per_replica, drop_remainder=True)  # it divides: no batch is dropped
    return exact.prefetch(local_replicas)


def _with_sample_weight(*element):
    """(x, y) -> (x, y, ones); x may be a structure (the activations at a boundary of several tensors)."""
    if len(element) == 3:
        return element
    x, labels = element
    return x, labels, tf.ones(tf.shape(labels)[:1], tf.float32)


def _padded_to(element, size: int):
    """Every tensor of the (nested) element padded with zeros to `size` examples. The labels give
    the batch's size: they are one tensor whatever x is."""
    missing = size - tf.shape(element[1])[0]

    def pad(tensor):
        tensor = tf.pad(tensor, [[0, missing]] + [[0, 0]] * (len(tensor.shape) - 1))
        tensor.set_shape([size, *tensor.shape[1:]])  # static shapes, as drop_remainder gives
        return tensor

    return tf.nest.map_structure(pad, element)
