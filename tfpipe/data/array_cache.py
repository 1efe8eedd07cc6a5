"""A memory cache that keeps a split's decoded examples in one preallocated array.

    first complete pass:  examples -> written to slot i as they arrive -> i
    every later pass:     range(examples cached) -> i      (the source is not read)

The pipeline shuffles and batches the indices, then gathers each batch of
examples with one copy (gather).

Why not Dataset.cache(): it keeps every image as its own allocation, made while
the decoding threads allocate and free buffers of every size. glibc malloc can
neither reuse nor return the holes left between cached images, which then hold
a large and varying share of the images' size on top (BUILD_NOTES.md, "The memory cache is one array per split").
Here each component has one buffer, allocated when a pass starts and written
once per slot, so the cache costs the examples' bytes and no more. A later pass
shuffles 8-byte indices instead of images.

One pass at a time: two iterators over the same cache would fill it together.
A pass that stops early (take(), an interrupted epoch) leaves the cache
unfilled, and the next pass starts again from the source, as Dataset.cache() does.
"""

from __future__ import annotations

import concurrent.futures

import tensorflow as tf

_NOT_FILLED = -1
_FILL_BATCH = 64  # examples written at once by fill()


class ArrayCache:
    def __init__(self, element_spec, capacity: int):
        """element_spec: the cached dataset's; every component needs a fully known shape.
        capacity: the most examples a pass may bring (the split's size)."""
        specs = tf.nest.flatten(element_spec)
        for spec in specs:
            if not spec.shape.is_fully_defined():
                raise ValueError(f"ArrayCache needs examples of a fixed shape, got {spec}")
        if capacity <= 0:
            raise ValueError(f"ArrayCache capacity must be positive, got {capacity}")
        self._element_spec = element_spec
        self._specs = specs
        self._capacity = capacity
        self._arrays, self._size, self._written = on_the_host(
            lambda: (
                [
                    tf.Variable(tf.zeros([0, *spec.shape], spec.dtype), shape=[None, *spec.shape], trainable=False)
                    for spec in specs
                ],
                # Examples cached by the last complete pass; _NOT_FILLED before one.
                tf.Variable(tf.constant(_NOT_FILLED, tf.int64), trainable=False),
                tf.Variable(tf.constant(0, tf.int64), trainable=False),
            )
        )

    def indices(self, examples: tf.data.Dataset) -> tf.data.Dataset:
        """The cached examples' indices, filling the cache from `examples` on the first complete pass."""
        if examples.element_spec != self._element_spec:
            raise ValueError(f"examples give {examples.element_spec}, the cache holds {self._element_spec}")
        filling = (
            _side_effect(self._start_filling)
            .concatenate(examples.enumerate().map(self._write))
            .concatenate(_side_effect(self._finish_filling))
        )
        # The passes are chosen each time the dataset is iterated: flat_map builds
        # the source's iterator only on a pass that needs it.
        from_source = self._when(filled=False).flat_map(lambda _: filling)
        from_cache = self._when(filled=True).flat_map(lambda _: tf.data.Dataset.range(self._size))
        indices = from_cache.concatenate(from_source)
        known = int(examples.cardinality())
        if known >= 0:  # keep a known size known, for Keras' steps per epoch
            indices = indices.apply(tf.data.experimental.assert_cardinality(known))
        return indices

    def fill(self, examples: tf.data.Dataset) -> int:
        """Fills the cache now, in one pass over `examples`, a batch of them per write (the
        decoding runs ahead in parallel); returns how many it holds. Afterwards count and labels
        are known in Python, for the epochs' orders drawn over them."""
        with tf.init_scope(), tf.device("/device:CPU:0"):
            self._start_filling()
            filled = 0
            for batch in examples.batch(_FILL_BATCH).prefetch(2):
                size = int(tf.shape(tf.nest.flatten(batch)[0])[0])
                if filled + size > self._capacity:
                    raise ValueError(f"the source gave more examples than the {self._capacity} its metadata counts")
                slots = tf.range(filled, filled + size, dtype=tf.int64)
                for array, component in zip(self._arrays, tf.nest.flatten(batch)):
                    # A sparse update writes the slots in place; a dense assign would copy the array.
                    tf.raw_ops.ResourceScatterUpdate(resource=array.handle, indices=slots, updates=component)
                filled += size
            self._written.assign(filled)
            self._finish_filling()
        self.count = filled
        self.labels = self._arrays[1][:filled].numpy()  # the element's second component
        return self.count

    def gather(self, indices: tf.Tensor):
        """The cached examples at `indices` (a batch of indices gives a batch of examples)."""
        return tf.nest.pack_sequence_as(self._element_spec, [tf.gather(array, indices) for array in self._arrays])

    def gather_component(self, indices: tf.Tensor, position: int) -> tf.Tensor:
        """One component of the cached examples at `indices` (position in the flattened
        element), without copying the others: e.g. the labels alone, not the images."""
        return tf.gather(self._arrays[position], indices)

    def label_of(self, indices: tf.Tensor) -> tf.Tensor:
        """The labels of (image, label) examples at `indices`, without copying their images."""
        return self.gather_component(indices, 1)

    def _when(self, filled: bool) -> tf.data.Dataset:
        return tf.data.Dataset.range(1).filter(lambda _: (self._size.read_value() != _NOT_FILLED) == filled)

    def _start_filling(self):
        # Only an unfilled cache starts a pass from the source, so _size is already
        # _NOT_FILLED. Empty leaves the memory untouched: pages become resident as
        # slots are written.
        return [
            self._written.assign(0, read_value=False),
            *(
                array.assign(tf.raw_ops.Empty(shape=[self._capacity, *spec.shape], dtype=spec.dtype), read_value=False)
                for array, spec in zip(self._arrays, self._specs)
            ),
        ]

    def _write(self, index, example):
        in_range = tf.debugging.assert_less(
            index,
            tf.constant(self._capacity, tf.int64),
            message=f"the source gave more examples than the {self._capacity} its metadata counts",
        )
        with tf.control_dependencies([in_range]):
            writes = [
                # A sparse update writes one slot in place; a dense assign would copy the array.
                tf.raw_ops.ResourceScatterUpdate(resource=array.handle, indices=index[None], updates=component[None])
                for array, component in zip(self._arrays, tf.nest.flatten(example))
            ]
            # enumerate() counts up and this map runs one example at a time (its
            # writes make it stateful, which tf.data never parallelizes).
            writes.append(self._written.assign(index + 1, read_value=False))
        with tf.control_dependencies(writes):
            return tf.identity(index)

    def _finish_filling(self):
        return [self._size.assign(self._written.read_value(), read_value=False)]


def on_the_host(make_variables):
    """make_variables() run eagerly, on the CPU, outside any tf.distribute strategy.

    The cache belongs to the input pipeline, which runs on the host. Under a
    strategy's scope (as in a dataset_fn for distribute_datasets_from_function)
    tf.Variable would make one copy per replica device, which the pipeline
    cannot write. A strategy scope is per thread, so a fresh thread has none.
    """

    def make():
        with tf.init_scope(), tf.device("/device:CPU:0"):
            return make_variables()

    if not tf.distribute.has_strategy():
        return make()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(make).result()


def _side_effect(make_ops) -> tf.data.Dataset:
    """An empty dataset of indices that runs make_ops() when a pass reaches it."""

    def run(_):
        with tf.control_dependencies(make_ops()):
            return tf.constant(-1, tf.int64)

    return tf.data.Dataset.range(1).map(run).filter(lambda index: index >= 0)
