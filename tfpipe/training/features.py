"""Fast feature extraction: run the frozen base once, then train the head on its output.

With the base frozen and no augmentation, every epoch of phase 1 would feed the
same images through the same frozen base and get the same features. Computing
them once and training the head (the classifier's own Dropout and Dense
layers) on the stored features gives the same head in a fraction of the time.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfpipe.models import classifier as model_lib


def extract(classifier, datasets: list[tf.data.Dataset]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features [N, D] float32, labels [N]) for every example of each dataset, in one pass each."""
    extractor = model_lib.feature_extractor(classifier)
    return [
        (outputs[0], labels)
        for outputs, labels in run_once(lambda images: tf.cast(extractor(images, training=False), tf.float32), datasets)
    ]


def run_once(model, datasets: list[tf.data.Dataset]) -> list[tuple[tuple[np.ndarray, ...], np.ndarray]]:
    """(outputs, labels) for every example of each (images, labels) dataset: `model`'s outputs (one
    tensor or a list), each concatenated over the batches, in one pass per dataset."""

    @tf.function  # traced once, for all datasets: tracing a base costs seconds
    def forward(images):
        outputs = model(images)
        return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

    results = []
    for dataset in datasets:
        batches, labels = [], []
        for images, batch_labels in dataset:
            batches.append([output.numpy() for output in forward(images)])
            labels.append(batch_labels.numpy())
        outputs = tuple(np.concatenate([batch[i] for batch in batches]) for i in range(len(batches[0])))
        results.append((outputs, np.concatenate(labels)))
    return results


def feature_datasets(
    features: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int | None,
    balance=None,
    shard: tuple[int, int] | None = None,
) -> tf.data.Dataset:
    """Batches of (features, labels) as the pipeline makes batches of images: a training
    dataset is shuffled every epoch and, given a ClassBalance, oversampled or weighted.
    shard: (num_shards, index) for one of several input pipelines (tf.distribute)."""
    dataset = tf.data.Dataset.from_tensor_slices((features, labels))
    if shard is not None:
        dataset = dataset.shard(*shard)
    balance = balance if training else None
    if balance is not None:
        dataset = balance.oversample(dataset, lambda example: example[1], exact=shard is None)
    if training:
        size = balance.epoch_examples(len(labels)) if balance is not None else len(labels)
        dataset = dataset.shuffle(size, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size, drop_remainder=training)
    if balance is not None:
        dataset = balance.add_weights(dataset)
    return dataset.prefetch(tf.data.AUTOTUNE)
