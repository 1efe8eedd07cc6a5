"""The order of a training epoch: a function of the run's seed and the epoch, nothing else.

    position p of epoch e  ->  index_shuffle(p, [seed, e], n - 1)  ->  example (or a table entry)

tf.random.experimental.index_shuffle maps each position to an index of a pseudorandom
permutation without materializing it, statelessly: epoch e's order is the same in every
process that asks, an epoch can start at any position for free, and the state to save is
(epoch, step), a few bytes. A run killed inside an epoch resumes it at the step it saved,
seeing exactly the examples the uninterrupted epoch had not yet trained on, in the same
order (runs.state, training.train). Every cached stream reads this way: the decoded images
in memory or on disk, a file list read without a cache, the stored features and activations.

A table (oversampling's repeated indices, data.balance) is permuted the same way: position
p reads table[index_shuffle(p, ...)].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

SEED_LIMIT = 2**31 - 1  # seeds are drawn below this and kept in the run's state


def seed_or_draw(seed: int | None) -> int:
    """`seed`, or for a run given none a seed drawn here; the run records it, so that its resumed
    epochs replay."""
    return seed if seed is not None else int(np.random.default_rng().integers(0, SEED_LIMIT))


def epoch_positions(count: int, seed: int, epoch, start=0, table: np.ndarray | None = None) -> tf.data.Dataset:
    """The indices of epoch `epoch` from position `start` (Python ints or int64 scalar tensors):
    a permutation of range(count), or of `table`'s entries (then count == len(table))."""
    if count <= 0:
        return tf.data.Dataset.range(0)
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    positions = tf.data.Dataset.range(tf.cast(start, tf.int64), count)
    shuffled = positions.map(lambda p: tf.random.experimental.index_shuffle(p, key, tf.constant(count - 1, tf.int64)))
    if table is None:
        return shuffled
    entries = tf.constant(np.asarray(table, np.int64))
    return shuffled.map(lambda i: tf.gather(entries, i))


def epochs(first: int, end: int, one_epoch, start_step: int = 0) -> tf.data.Dataset:
    """Batches of epochs first .. end-1 in one stream, epoch `first` from `start_step`:
    one_epoch(epoch, start_step) -> that epoch's batches (Python ints: each epoch's dataset is
    built here, so a stage that needs its seed as a number, tf.data's shuffle, can have it)."""
    stream = one_epoch(first, start_step)
    for epoch in range(first + 1, end):
        stream = stream.concatenate(one_epoch(epoch, 0))
    return stream


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed for epoch `epoch` of a run seeded `seed`, for tf.data's shuffle (reading without a
    cache): the same pair always gives the same seed."""
    return ((seed * 1_000_003) ^ epoch) % 2**63


def indexed_batches(
    examples, batch_size: int, *, training: bool, seed: int, epoch=0, start_step=0, table: np.ndarray | None = None
) -> tf.data.Dataset:
    """Batches gathered by index from `examples` (anything with .count and .gather(indices): the
    image caches, stored features): epoch `epoch`'s order from step `start_step` when training
    (the last partial batch dropped), every example in order otherwise. table: the indices an
    epoch draws from (oversampling, a shard), instead of range(examples.count)."""
    if not training:
        indices = tf.data.Dataset.range(examples.count)
    else:
        count = len(table) if table is not None else examples.count
        start = tf.cast(start_step, tf.int64) * batch_size
        indices = epoch_positions(count, seed, epoch, start, table)
    batched = indices.batch(batch_size, drop_remainder=training)
    return batched.map(examples.gather, num_parallel_calls=tf.data.AUTOTUNE)


def each_pass_next_epoch(first_epoch: int) -> tf.data.Dataset:
    """A one-element dataset whose element is first_epoch on the first pass over it, then the
    next number on each later pass (a counter read as each pass starts)."""
    from tfpipe.data.array_cache import on_the_host

    counter = on_the_host(lambda: tf.Variable(tf.constant(first_epoch - 1, tf.int64), trainable=False))
    return tf.data.Dataset.range(1).map(lambda _: counter.assign_add(1))
