"""Class imbalance: weight the loss, or oversample the rare classes in tf.data.

    ClassBalance(counts=(900, 100), class_weight="balanced")   # loss weights 0.56, 5.0
    ClassBalance(counts=(900, 100), balance="oversample")      # 900 + 900 examples an epoch

class_weight="balanced" gives class c the weight n / (k n_c), as Keras' and
scikit-learn's "balanced" mean it, so every class adds the same total weight to
an epoch's loss. The weights travel as a third element of each training batch,
(images, labels, sample weights), which the classifier's train_step hands to
compute_loss: Keras' own fit(class_weight=) cannot map a distributed dataset, and
this way the same batches serve one device, a strategy, the data service and
the fast feature path. Metrics stay unweighted (Keras passes sample weights only
to weighted_metrics), so accuracy still counts examples.

balance="oversample" repeats each class's examples up to the largest class's
count every epoch: the j-th example of class c met in a pass is repeated
floor((j+1) M / n_c) - floor(j M / n_c) times (M the largest count), which
spreads the extra copies evenly over the class and makes the epoch exactly
k M examples. It works on the cached stream, before the shuffle, so the cache
still holds each image once and every epoch's batches are new; the copies of an
example enter the shuffle buffer together, so a buffer of a few batches or more
(the default 1,000) spreads them apart.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import tensorflow as tf

from tfpipe.errors import TfpipeError

NONE = "none"
BALANCED = "balanced"
OVERSAMPLE = "oversample"
CLASS_WEIGHTS = (NONE, BALANCED)
BALANCES = (NONE, OVERSAMPLE)


def check(class_weight: str, balance: str) -> None:
    if class_weight not in CLASS_WEIGHTS:
        raise TfpipeError(f"--class_weight={class_weight!r}: use one of {', '.join(CLASS_WEIGHTS)}")
    if balance not in BALANCES:
        raise TfpipeError(f"--balance={balance!r}: use one of {', '.join(BALANCES)}")
    if class_weight != NONE and balance != NONE:
        raise TfpipeError(
            f"--class_weight={class_weight} and --balance={balance} both correct the imbalance, and together "
            "they overcorrect it; choose one"
        )


@dataclasses.dataclass(frozen=True)
class ClassBalance:
    counts: tuple[int, ...]  # training examples of each class
    class_weight: str = NONE
    balance: str = NONE

    def __post_init__(self):
        check(self.class_weight, self.balance)

    @property
    def weights(self) -> tuple[float, ...] | None:
        """Each class's loss weight, or None when the loss is not weighted."""
        if self.class_weight != BALANCED:
            return None
        total, present = sum(self.counts), sum(1 for n in self.counts if n)
        return tuple(total / (present * n) if n else 0.0 for n in self.counts)

    @property
    def oversamples(self) -> bool:
        return self.balance == OVERSAMPLE

    def epoch_examples(self, examples: int) -> int:
        """Examples an epoch serves, from `examples` in the split."""
        return max(self.counts) * sum(1 for n in self.counts if n) if self.oversamples else examples

    def oversample(
        self, dataset: tf.data.Dataset, label_of: Callable[..., tf.Tensor], *, exact: bool
    ) -> tf.data.Dataset:
        """`dataset` with each example repeated as the module docstring says; unchanged unless oversampling.

        label_of: an element's label. exact: the dataset is the whole split, so
        the epoch's size is known (not one shard of it, not a service's share).
        """
        if not self.oversamples:
            return dataset
        most = tf.constant(max(self.counts), tf.int64)
        counts = tf.constant(self.counts, tf.int64)

        def count_repeats(seen, element):
            label = tf.cast(label_of(element), tf.int64)
            j, n = seen[label], tf.maximum(counts[label], 1)
            repeats = (j + 1) * most // n - j * most // n
            return tf.tensor_scatter_nd_add(seen, [[label]], [1]), (element, repeats)

        repeated = dataset.scan(tf.zeros([len(self.counts)], tf.int64), count_repeats).flat_map(
            lambda element, repeats: tf.data.Dataset.from_tensors(element).repeat(repeats)
        )
        if exact:
            repeated = repeated.apply(tf.data.experimental.assert_cardinality(self.epoch_examples(0)))
        return repeated

    def oversample_table(self, labels) -> np.ndarray | None:
        """The indices of an oversampled epoch of examples with `labels`, each repeated as the module
        docstring says (the j-th example of a class met in label order); None without oversampling.
        An epoch then draws its order over this table (data.order)."""
        if not self.oversamples:
            return None
        labels = np.asarray(labels, np.int64)
        most = max(self.counts)
        seen = np.zeros(len(self.counts), np.int64)
        repeats = np.empty(len(labels), np.int64)
        for i, label in enumerate(labels):
            j, n = seen[label], max(self.counts[label], 1)
            repeats[i] = (j + 1) * most // n - j * most // n
            seen[label] += 1
        return np.repeat(np.arange(len(labels), dtype=np.int64), repeats)

    def add_weights(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        """(images, labels) batches -> (images, labels, sample weights); unchanged without class weights."""
        if self.weights is None:
            return batches
        table = tf.constant(self.weights, tf.float32)
        return batches.map(lambda images, labels: (images, labels, tf.gather(table, labels)))

    def record(self, class_names) -> dict:
        """What results.json says of the training split's classes and the correction used."""
        weights = self.weights
        return {
            "class_counts": dict(zip(class_names, self.counts)),
            "class_weight": self.class_weight,
            "balance": self.balance,
            "class_weights": dict(zip(class_names, (round(w, 4) for w in weights))) if weights else None,
            "examples_per_epoch": self.epoch_examples(sum(self.counts)),
        }
