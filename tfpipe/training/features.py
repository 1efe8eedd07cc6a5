"""Fast feature extraction: run the frozen base once, then train the head on its output.

With the base frozen and no augmentation, every epoch of phase 1 would feed the
same images through the same frozen base and get the same features. Computing
them once and training the head (the classifier's own Dropout and Dense
layers) on the stored features gives the same head in a fraction of the time.

Memory: the outputs are written batch by batch into arrays allocated once at their
final size, and the datasets made from them shuffle and batch indices and gather
each batch from the arrays (as the image cache does), so the stored outputs are held
once: no list of batches to concatenate, no copy into a tf.data tensor, no shuffle
buffer holding a second copy (measured in BUILD_NOTES.md, "The memory plan").
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfpipe.data import order
from tfpipe.models import classifier as model_lib


def extract(classifier, datasets: list[tf.data.Dataset], counts: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(features [N, D] float32, labels [N]) for every example of each dataset, in one pass each;
    counts: each dataset's number of examples. The base runs with its batch norms folded into its
    convolutions (tfpipe.models.folding): the same features to float rounding, faster."""
    extractor = model_lib.folded_feature_extractor(classifier)
    return [
        (outputs[0], labels)
        for outputs, labels in run_once(lambda images: tf.cast(extractor(images), tf.float32), datasets, counts)
    ]


def run_once(model, datasets: list[tf.data.Dataset], counts: list[int]) -> list[tuple[tuple[np.ndarray, ...], np.ndarray]]:
    """(outputs, labels) for every example of each (images, labels) dataset of counts[i] examples:
    `model`'s outputs (one tensor or a list), in one pass per dataset, each output written into
    one array of its final size."""

    def outputs_of(images):
        outputs = model(images)
        return tuple(outputs) if isinstance(outputs, (list, tuple)) else (outputs,)

    # Traced once for every batch size of every dataset (a split's last batch is smaller): a base's
    # trace and first call cost 0.3-0.4 s folded (more unfolded), which a second trace for that last
    # batch paid again. Without AutoGraph, as Keras traces its own steps: layers branch on tensors
    # with ops, not Python (`model` must too), and converting the walk of the base (models.folding)
    # added 0.06-0.12 s.
    image_spec = datasets[0].element_spec[0]
    forward = tf.function(
        outputs_of,
        input_signature=[tf.TensorSpec([None, *image_spec.shape[1:]], image_spec.dtype)],
        autograph=False,
    )
    results = []
    for dataset, count in zip(datasets, counts):
        arrays, labels, filled = None, np.empty([count], np.int64), 0
        for images, batch_labels in dataset:
            batch = [output.numpy() for output in forward(images)]
            if arrays is None:
                arrays = tuple(np.empty([count, *output.shape[1:]], output.dtype) for output in batch)
            size = len(batch_labels)
            if filled + size > count:
                raise ValueError(f"the dataset gave more than the {count} examples its source counts")
            for array, output in zip(arrays, batch):
                array[filled : filled + size] = output
            labels[filled : filled + size] = batch_labels.numpy()
            filled += size
        if filled != count:
            raise ValueError(f"the dataset gave {filled} examples where its source counts {count}")
        results.append((arrays, labels))
    return results


def feature_datasets(
    features,
    labels: np.ndarray,
    batch_size: int,
    *,
    training: bool,
    seed: int | None,
    balance=None,
    shard: tuple[int, int] | None = None,
    epoch=0,
    start_step=0,
) -> tf.data.Dataset:
    """Batches of (features, labels) as the pipeline makes batches of images: a training
    dataset is epoch `epoch` in its order (data.order), from `start_step`, and, given a
    ClassBalance, oversampled or weighted.
    features: an array, or a tuple of arrays (activations at a boundary of several tensors).
    shard: (num_shards, index) for one of several input pipelines (tf.distribute)."""
    stored = StoredArrays(features, labels)
    table = None
    if shard is not None:
        table = np.arange(shard[1], stored.count, shard[0], dtype=np.int64)
    balance = balance if training else None
    if balance is not None and balance.oversamples:
        mine = table if table is not None else np.arange(stored.count, dtype=np.int64)
        table = mine[balance.oversample_table(labels[mine])]
    if not training and table is not None:  # a shard read in order: its own examples only
        stored = StoredArrays(tuple(array[table] for array in stored.arrays), labels[table], single=stored.single)
        table = None
    dataset = order.indexed_batches(
        stored,
        batch_size,
        training=training,
        seed=0 if seed is None else seed,
        epoch=epoch,
        start_step=start_step,
        table=table,
    )
    if balance is not None:
        dataset = balance.add_weights(dataset)
    return dataset.prefetch(tf.data.AUTOTUNE)


class StoredArrays:
    """Arrays in memory read by index in tf.data (data.order.indexed_batches): an epoch shuffles
    and batches 8-byte indices and gathers each batch, the only copy made."""

    def __init__(self, x, labels: np.ndarray, single: bool | None = None):
        self.single = not isinstance(x, tuple) if single is None else single
        self.arrays = (x,) if not isinstance(x, tuple) else x
        self.labels = np.asarray(labels)
        self._labels = tf.constant(self.labels)  # 8 bytes an example

    @property
    def count(self) -> int:
        return len(self.labels)

    def label_of(self, indices):
        return tf.gather(self._labels, indices)

    def gather(self, indices):
        arrays = self.arrays
        dtypes = [tf.as_dtype(array.dtype) for array in arrays]
        batch = tf.numpy_function(lambda i: tuple(array[i] for array in arrays), [indices], dtypes, stateful=False)
        for tensor, array in zip(batch, arrays):
            tensor.set_shape([indices.shape[0], *array.shape[1:]])
        x = batch[0] if self.single else tuple(batch)
        return x, self.label_of(indices)
